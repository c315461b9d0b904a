"""Domains: what is specific to a kind of data, one package each.

A domain is a class implementing ``shortcutlib.domain.Domain`` with a nested ``Config``; a file in
``configs/domain/`` names it with ``_target_``. Domains depend on shortcutlib, never the reverse.
"""
