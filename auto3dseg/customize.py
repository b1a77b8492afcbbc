"""Hooks that apply our training customisations to every generated Auto3DSeg bundle."""

from __future__ import annotations

__all__ = ["input_overrides", "after_generation"]


def input_overrides(algo: str, config: dict, datalist: dict) -> dict:
    """Extra keys to merge into the Auto3DSeg ``input`` dict for ``algo``.

    Placeholder of the contract with ``run_auto3dseg``; filled in by the partial-annotation work.
    """
    return {}


def after_generation(bundle_dir: str, algo: str, config: dict, datalist: dict) -> None:
    """Idempotent edits of a generated bundle's YAML configs; a no-op for unknown algos."""
    return None
