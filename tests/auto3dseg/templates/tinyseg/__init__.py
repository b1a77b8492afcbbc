"""Tiny Auto3DSeg algorithm template for CPU tests (our own code)."""
