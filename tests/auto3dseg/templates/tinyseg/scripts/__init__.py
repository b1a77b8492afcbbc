"""Scripts of the tiny test template."""
