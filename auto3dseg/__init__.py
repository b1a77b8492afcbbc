"""auto3dseg package."""
