"""cellmap package."""
