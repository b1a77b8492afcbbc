"""seg2d package."""
