"""The conversion report: conversion_report.json, conversion_report.md and one mid-slice picture per crop.

Each crop record (a dict, built by ``auto3dseg.convert``) holds its source grids, the raw level
read, the output grid, % outside raw, % raw chunks missing, EM zero fraction under labels,
per-class status and voxel counts, the data-check flags and the verdict. The picture shows the
three orthogonal mid-slices of the *converted* EM, alone and with the labels overlaid (ignore
voxels hatched in red), so misregistration or blank EM is visible at a glance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from auto3dseg.datacheck import fetch_command
from cellmap.atomic import write_json_atomic

__all__ = ["REPORT_SCHEMA", "save_picture", "render_markdown", "write_report"]

REPORT_SCHEMA = 1


def _label_rgba(labels: np.ndarray, n_classes: int, ignore_value: int) -> np.ndarray:
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    rgba = np.zeros(labels.shape + (4,), np.float32)
    for v in np.unique(labels):
        v = int(v)
        if v == 0:
            continue
        m = labels == v
        if v == ignore_value:
            rgba[m] = (1.0, 0.0, 0.0, 0.25)
        else:
            r, g, b, _ = cmap((v - 1) % 20)
            rgba[m] = (r, g, b, 0.45)
    return rgba


def save_picture(path, slices: Mapping[str, tuple], voxel_size_nm: Sequence[float], title: str,
                 n_classes: int, ignore_value: int) -> Path:
    """PNG of three mid-slices: EM alone (top row) and EM with labels (bottom row).

    ``slices``: {"z": (em, labels), "y": ..., "x": ...}; ``em`` uint8 2-D, ``labels`` 2-D or None.
    Axis pairs: z-slice (y, x), y-slice (z, x), x-slice (z, y). Ignore voxels are hatched in red.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vz, vy, vx = (float(v) for v in voxel_size_nm)
    panels = [("z", "z mid-slice (y down, x right)", vy / vx), ("y", "y mid-slice (z down, x right)", vz / vx),
              ("x", "x mid-slice (z down, y right)", vz / vy)]
    fig, axes = plt.subplots(2, 3, figsize=(12, 8))
    for col, (key, label, aspect) in enumerate(panels):
        em, lab = slices.get(key, (None, None))
        for row in range(2):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if em is None:
                ax.set_axis_off()
                continue
            ax.imshow(em, cmap="gray", vmin=0, vmax=255, aspect=aspect, interpolation="nearest")
            if row == 1 and lab is not None:
                ax.imshow(_label_rgba(lab, n_classes, ignore_value), aspect=aspect, interpolation="nearest")
                ign = lab == ignore_value
                if ign.any():
                    matplotlib.rcParams["hatch.color"] = "red"
                    ax.contourf(ign.astype(float), levels=[0.5, 1.5], colors="none", hatches=["///"])
            ax.set_title(label + (" + labels" if row else ", EM"), fontsize=9)
    fig.suptitle(f"{title}\nclasses coloured by label value, ignore hatched red", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=72)
    plt.close(fig)
    tmp.replace(path)
    return path


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.1f}"


def render_markdown(report: Mapping) -> str:
    """The human report: summary, exclusions with reasons and fixes, per-crop table and pictures."""
    crops: List[Mapping] = list(report.get("crops", []))
    kept = [c for c in crops if c["verdict"] == "kept"]
    excl = [c for c in crops if c["verdict"] != "kept"]
    p = report.get("parameters", {})
    lines = [
        "# Conversion report", "",
        f"- datasplit: `{p.get('datasplit')}`",
        f"- output: `{report.get('output_dir')}`{' (dry run: no NIfTI written)' if p.get('dry_run') else ''}",
        f"- target spacing (z, y, x): {p.get('target_spacing_nm')} nm; raw scale: `{p.get('scale')}`",
        f"- classes ({len(report.get('encoding', {}).get('values', {}))}): "
        + ", ".join(f"{n}={v}" for n, v in report.get("encoding", {}).get("values", {}).items())
        + f"; ignore = {report.get('encoding', {}).get('ignore_value')}",
        f"- precedence where classes overlap (highest first): {', '.join(report.get('encoding', {}).get('precedence', []))}",
        f"- folds: {p.get('folds')} grouped by {p.get('fold_by')} (seed {p.get('seed')})",
        f"- crops: **{len(kept)} kept**, **{len(excl)} excluded**"
        + (" (flagged crops kept: --keep_flagged)" if p.get("keep_flagged") else ""), "",
    ]
    if excl:
        lines += ["## Excluded crops", "", "| crop | reason | fix |", "|---|---|---|"]
        for c in excl:
            for f in c.get("flags", []) or [{"code": c["verdict"], "message": c.get("error", ""), "fix": ""}]:
                lines.append(f"| {c['key']} | {f['code']}: {f['message']} | {f.get('fix', '')} |")
        lines.append("")
    flagged_kept = [c for c in kept if c.get("flags")]
    if flagged_kept:
        lines += ["## Kept despite flags", ""]
        lines += [f"- {c['key']}: " + "; ".join(f["code"] for f in c["flags"]) for c in flagged_kept]
        lines.append("")
    missing = [c["crop"] for c in crops if any(f["code"] == "raw_missing" for f in c.get("flags", []))]
    if missing:
        lines += ["## Missing raw data", "", "Download every EM level of these crops, then rerun:", "",
                  "```bash", fetch_command(sorted(set(missing))), "```", ""]
    lines += ["## Crops", "",
              "| crop | verdict | fold | raw level (nm) | label grid (nm) | output shape | outside raw | raw chunks missing | EM==0 under labels | EM mean/std | annotated |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in crops:
        raw = c.get("raw", {})
        lg = c.get("source_label_grid", {})
        st = c.get("stats", {})
        ann = [n for n, s in c.get("classes", {}).items() if s.get("status") in ("annotated", "absent")]
        lines.append(
            f"| {c['key']} | {c['verdict']} | {c.get('fold', '-')} | {raw.get('level', '-')} {raw.get('voxel_size_nm', '')} "
            f"| {lg.get('voxel_size_nm', '-')} | {c.get('output', {}).get('shape', '-')} "
            f"| {_pct(st.get('outside_raw_fraction'))} | {_pct(c.get('raw_missing_chunk_fraction'))} "
            f"| {_pct(st.get('labelled_em_zero_fraction'))} | {_num(st.get('em_mean'))}/{_num(st.get('em_std'))} "
            f"| {', '.join(ann) or '-'} |")
    lines.append("")
    for c in crops:
        lines += [f"### {c['key']} ({c['verdict']})", ""]
        cls = c.get("classes", {})
        if cls:
            lines += ["| class | status | source voxels | output voxels | lost to overlaps |", "|---|---|---|---|---|"]
            for n, s in cls.items():
                lines.append(f"| {n} | {s.get('status')} | {s.get('source_voxels', '-')} | {s.get('output_voxels', '-')} "
                             f"| {s.get('overlap_lost_voxels', '-')} |")
            lines.append("")
        for f in c.get("flags", []):
            lines.append(f"- **{f['code']}**: {f['message']}" + (f" Fix: {f['fix']}" if f.get("fix") else ""))
        if c.get("picture"):
            lines += ["", f"![{c['key']}]({c['picture']})"]
        lines.append("")
    return "\n".join(lines)


def write_report(output_dir, report: Dict) -> Dict[str, Path]:
    """Write ``conversion_report.json`` and ``conversion_report.md`` atomically into ``output_dir``."""
    out = Path(output_dir)
    report = dict(report, schema=REPORT_SCHEMA)
    js = write_json_atomic(out / "conversion_report.json", report)
    md = out / "conversion_report.md"
    tmp = md.with_name(md.name + ".tmp")
    tmp.write_text(render_markdown(report))
    tmp.replace(md)
    return {"json": js, "md": md}
