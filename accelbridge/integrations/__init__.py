"""Model frameworks running through the attention facade (optional extras; importing this package imports none)."""
