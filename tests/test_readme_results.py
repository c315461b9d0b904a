"""The README's results section is the one benchmarks/readme_results.py generates from benchmarks/results."""

from __future__ import annotations

from benchmarks import readme_results


def test_readme_results_section_matches_the_results_files():
    assert readme_results.main(["--check"]) == 0, "run python -m benchmarks.readme_results"


def test_section_quotes_the_results_files():
    section = readme_results.section()
    assert section.startswith(readme_results.BEGIN) and section.endswith(readme_results.END)
    assert "policy_latency.md" in section
