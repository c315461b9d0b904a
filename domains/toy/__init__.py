"""Low-dimensional distributions, some with exact velocity fields and flow maps."""
