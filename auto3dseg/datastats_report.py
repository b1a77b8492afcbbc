"""datastats_report.md with PNG plots, from the analyze step's YAML files (what a person reads instead of YAML)."""

from __future__ import annotations

import os

import numpy as np
import yaml

from cellmap.atomic import atomic_path, write_text_atomic

__all__ = ["write_report", "REPORT", "PLOTS"]

REPORT = "datastats_report.md"
PLOTS = ("class_coverage.png", "class_foreground.png", "shapes.png", "spacing.png", "intensity.png")


def _load(path):
    with open(path) as fh:
        return yaml.safe_load(fh)


def _fmt(x, digits=3):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def _savefig(fig, work_dir, name):
    """Save ``fig`` atomically as ``work_dir/name``, close it and return ``name``."""
    import matplotlib.pyplot as plt

    with atomic_path(os.path.join(work_dir, name), suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return name


def _class_rows(summary):
    """(label, per-case percentages when present) for each class, else per label value."""
    rows = []
    cases = summary["cases"]
    if summary["classes"]:
        for c in summary["classes"]:
            vals = [sum(r["percent_by_value"].get(v, 0.0) for v in c["values"]) for r in cases]
            rows.append((c["name"], [p for p in vals if p > 0]))
    else:
        for v in summary["by_label_value"]:
            rows.append((f"value {v}", [r["percent_by_value"][v] for r in cases if v in r["percent_by_value"]]))
    return rows


def _axis_hists(ax, values, xlabel):
    for i, lab in enumerate(("x", "y", "z")):
        ax.hist(values[:, i], bins=20, alpha=0.5, label=lab)
    ax.set_xlabel(xlabel)
    ax.legend()


def _plots(work_dir, summary):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = summary["cases"]
    out = {}
    names = [c["name"] for c in summary["classes"]] or [f"value {v}" for v in summary["by_label_value"]]
    present = [c["cases_present"] for c in summary["classes"]] or [
        d["cases_present"] for d in summary["by_label_value"].values()
    ]
    annotated = [c["cases_annotated"] for c in summary["classes"]]
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.5))
    if annotated and all(a is not None for a in annotated):
        ax.barh(y - 0.2, annotated, height=0.4, label="annotated")
        ax.barh(y + 0.2, present, height=0.4, label="present (> 0 voxels)")
        ax.legend()
    else:
        ax.barh(y, present, label="present")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel(f"cases (of {summary['n_cases']})")
    ax.set_title("Per-class coverage")
    out["coverage"] = _savefig(fig, work_dir, PLOTS[0])

    rows = _class_rows(summary)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.5))
    data = [r[1] if r[1] else [np.nan] for r in rows]
    try:
        ax.boxplot(data, orientation="horizontal", showfliers=True)  # matplotlib >= 3.10
    except TypeError:
        ax.boxplot(data, vert=False, showfliers=True)
    ax.set_yticks(np.arange(1, len(rows) + 1), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("foreground % of the case's voxels (cases where present)")
    ax.set_title("Per-class foreground %")
    out["foreground"] = _savefig(fig, work_dir, PLOTS[1])

    shapes = np.array([c["shape"] for c in cases], dtype=float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    _axis_hists(axes[0], shapes, "voxels per axis (RAS order)")
    axes[1].hist(np.prod(shapes, axis=1), bins=20)
    axes[1].set_xlabel("voxels per case")
    fig.suptitle("Case shapes")
    out["shapes"] = _savefig(fig, work_dir, PLOTS[2])

    spacing = np.array([c["spacing"] for c in cases], dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    _axis_hists(ax, spacing, "spacing (affine units, nm for converted CellMap data)")
    ax.set_title("Voxel spacing")
    out["spacing"] = _savefig(fig, work_dir, PLOTS[3])

    order = np.argsort([c["intensity_mean"] for c in cases])
    fig, ax = plt.subplots(figsize=(8, 3.5))
    mean = np.array([cases[i]["intensity_mean"] for i in order])
    lo = np.array([cases[i]["intensity_p00_5"] for i in order])
    hi = np.array([cases[i]["intensity_p99_5"] for i in order])
    ax.errorbar(np.arange(len(order)), mean, yerr=[mean - lo, hi - mean], fmt="o", ms=3, capsize=2)
    ax.set_xlabel("case (sorted by mean)")
    ax.set_ylabel("intensity: mean, p0.5..p99.5")
    ax.set_title("Image intensity per case (foreground-cropped, as DataAnalyzer)")
    out["intensity"] = _savefig(fig, work_dir, PLOTS[4])
    return out


def write_report(work_dir) -> str:
    """Write ``work_dir/datastats_report.md`` and its PNGs from ``datastats.yaml`` and ``datastats_by_class.yaml``.

    Returns the report path.
    """
    work_dir = os.path.abspath(os.fspath(work_dir))
    summary = _load(os.path.join(work_dir, "datastats_by_class.yaml"))
    stats = _load(os.path.join(work_dir, "datastats.yaml"))["stats_summary"]
    plots = _plots(work_dir, summary)
    cases = summary["cases"]
    shapes = np.array([c["shape"] for c in cases], dtype=float)
    voxels = np.prod(shapes, axis=1)
    spacing = np.array([c["spacing"] for c in cases], dtype=float)
    inten = stats["image_stats"]["intensity"]
    fg = stats["image_foreground_stats"]["intensity"]
    lines = [
        "# Data statistics",
        "",
        f"{summary['n_cases']} cases analysed. Files: `datastats.yaml` (MONAI's summary, read by the templates), "
        "`datastats_by_case.yaml` (per case), `datastats_by_class.yaml` (per class, regrouped by label value).",
        "",
        "## Shapes and spacing",
        "",
        "| | min | median | max |",
        "|---|---|---|---|",
        f"| voxels per case | {voxels.min():.3g} | {np.median(voxels):.3g} | {voxels.max():.3g} |",
    ]
    for i, ax in enumerate("xyz"):
        lines.append(
            f"| shape {ax} | {shapes[:, i].min():g} | {np.median(shapes[:, i]):g} | {shapes[:, i].max():g} |"
        )
    for i, ax in enumerate("xyz"):
        lines.append(
            f"| spacing {ax} | {spacing[:, i].min():g} | {np.median(spacing[:, i]):g} | {spacing[:, i].max():g} |"
        )
    lines += [
        "",
        f"![shapes]({plots['shapes']}) ![spacing]({plots['spacing']})",
        "",
        "## Classes",
        "",
        "Percentages are of all voxels of a case, over the cases where the class is present. "
        "MONAI's `stats_summary#label_stats#label` in `datastats.yaml` indexes per-case lists by label value and "
        "mixes classes when cases hold different label sets: use this table instead.",
        "",
        "| class | values | cases annotated | cases present | mean % | median % | max % |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in summary["classes"]:
        p = c["percent_when_present"]
        lines.append(
            f"| {c['name']} | {', '.join(map(str, c['values']))} | {_fmt(c['cases_annotated'])} | "
            f"{c['cases_present']} | {_fmt(p['mean'])} | {_fmt(p['median'])} | {_fmt(p['max'])} |"
        )
    lines += ["", "By label value:", "", "| value | cases present | mean % | max % | mean intensity |", "|---|---|---|---|---|"]
    for v, d in summary["by_label_value"].items():
        p = d["percent_when_present"]
        lines.append(
            f"| {v} | {d['cases_present']} | {_fmt(p['mean'])} | {_fmt(p['max'])} | "
            f"{_fmt(d['intensity_mean_when_present'])} |"
        )
    ign = summary["ignore"]
    lines += [
        "",
        f"Ignore value {_fmt(summary['ignore_value'])} (unknown / outside raw): in {ign['cases_present']} cases, "
        f"mean {_fmt(ign['percent_when_present']['mean'])} % of their voxels (max "
        f"{_fmt(ign['percent_when_present']['max'])} %). It is not a class; DataAnalyzer counts it as a label and "
        "as foreground, so `image_foreground_stats` includes it.",
        "",
        f"![coverage]({plots['coverage']}) ![foreground]({plots['foreground']})",
        "",
        "## Intensity",
        "",
        "| | mean | median | p0.5 | p99.5 | stdev |",
        "|---|---|---|---|---|---|",
        f"| image (foreground-cropped, mean of cases) | {_fmt(inten['mean'])} | {_fmt(inten['median'])} | "
        f"{_fmt(inten['percentile_00_5'])} | {_fmt(inten['percentile_99_5'])} | {_fmt(inten['stdev'])} |",
        f"| label > 0 (mean of cases) | {_fmt(fg['mean'])} | {_fmt(fg['median'])} | "
        f"{_fmt(fg['percentile_00_5'])} | {_fmt(fg['percentile_99_5'])} | {_fmt(fg['stdev'])} |",
        "",
        f"![intensity]({plots['intensity']})",
        "",
    ]
    return str(write_text_atomic(os.path.join(work_dir, REPORT), "\n".join(lines)))
