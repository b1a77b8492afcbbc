"""The embedded sample dataset: a small, deterministic CellMap-format zarr store with planted pitfalls.

``python -m cellmap.sample DIR`` (or the console script ``cellmap_sample DIR``) writes::

    DIR/jrc_synth-a/jrc_synth-a.zarr/recon-1/em/fibsem-uint8/s0..s2        raw, (5.24, 4, 4) nm, translation 0
    DIR/jrc_synth-a/jrc_synth-a.zarr/recon-1/labels/groundtruth/crop1, crop4
    DIR/jrc_synth-b/jrc_synth-b.zarr/recon-1/em/fibsem-uint8/s0..s2        raw, (4, 4, 4) nm, translation (36, 20, 44)
    DIR/jrc_synth-b/jrc_synth-b.zarr/recon-1/labels/groundtruth/crop2, crop3, crop5
    DIR/datasplit.csv              CellMap's exact 5-column form, roots relative to DIR
    DIR/train_crop_manifest.csv    the toolbox's manifest form ([a;b;c] vectors)
    DIR/sample_manifest.json       what was planted where (see :data:`SAMPLE_CROPS`)

The EM is rendered from one world-coordinate scene per dataset (wavy cell walls with
extracellular space, mitochondria with dark membranes and ribosome specks, ER tubes,
golgi stacks, vesicles, endosomes, nuclei), so labels at any voxel size line up with the EM
physically. Membranes are ~15-20 grey levels darker than lumens; the whole EM has
FIB-SEM-like uint8 statistics (mean ~125-135, std ~20). Coarser raw levels are 2x block
means. Everything is seeded: two builds are byte-identical.

Planted conditions (one per crop, see :data:`SAMPLE_CROPS`): labels 2x finer than raw
(crop1, crop5), equal to raw (crop2, crop4), coarse on raw s2's grid (crop3); crop2 partly
outside raw (3 slices past the last z, 6 rows before y 0); crop3 nucleus-only with a uint16
instance array holding id 255 (a real id: complement_counts.unknown = 0); annotated-absent
classes (crop1 golgi_mem via complement_counts, golgi_lum via reading since its s0 has no
.zattrs); unknown classes (e.g. nuc in crop1); crop4 missing half its raw s0 chunks (a crashed
download); crop3 missing its raw s0/s1 chunks (a matched-resolution ``csc fetch-data``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from cellmap import _zarr
from cellmap.atomic import write_text_atomic
from cellmap.classes import ATOMIC_IDS, atoms_of, get_class
from cellmap.datasplit import DatasplitRow, write_datasplit
from cellmap.errors import CellMapError
from cellmap.grid import Grid

__all__ = ["DatasetSpec", "CropSpec", "SAMPLE_DATASETS", "SAMPLE_CROPS", "SAMPLE_VERSION", "build_sample",
           "raw_location", "crop_location", "crop_grid", "sample", "main"]

SAMPLE_VERSION = 1
RAW_PATH = "recon-1/em/fibsem-uint8"
GT_PATH = "recon-1/labels/groundtruth"
SEMANTIC_ENCODING = {"absent": 0, "present": 1, "unknown": 255}
INSTANCE_ENCODING = {"absent": 0, "unknown": 255}


@dataclass(frozen=True)
class DatasetSpec:
    """Raw EM of one sample dataset: s0 voxel size / translation (nm, z/y/x), s0 shape, chunks."""

    name: str
    voxel_size_nm: Tuple[float, float, float]
    translation_nm: Tuple[float, float, float]
    shape: Tuple[int, int, int]
    chunks: Tuple[int, int, int]
    seed: int

    def grid(self, level: int = 0) -> Grid:
        """Raw level ``sN``: scale vs0 * 2**N, translation t0 + (2**N - 1)/2 * vs0."""
        vs = tuple(v * 2 ** level for v in self.voxel_size_nm)
        tr = tuple(t + (2 ** level - 1) / 2 * v for t, v in zip(self.translation_nm, self.voxel_size_nm))
        return Grid(vs, tr, tuple(s // 2 ** level for s in self.shape))


@dataclass(frozen=True)
class CropSpec:
    """One sample crop. ``raw_level``/``raw_start``: the label voxel 0 corner sits on the
    corner of voxel ``raw_start`` of raw level ``raw_level``; ``ratio``: label voxel = raw
    level voxel / ratio. ``classes``: class groups written (bracket-list order); ``absent``:
    written all zero; ``no_s0_attrs``: s0 written without ``.zattrs``."""

    dataset: str
    crop: str
    usage: str
    raw_level: int
    raw_start: Tuple[int, int, int]
    ratio: int
    shape: Tuple[int, int, int]
    classes: Tuple[str, ...]
    conditions: Tuple[str, ...]
    absent: Tuple[str, ...] = ()
    no_s0_attrs: Tuple[str, ...] = ()
    instance_dtype: Dict[str, str] = field(default_factory=dict)


SAMPLE_DATASETS = {
    "jrc_synth-a": DatasetSpec("jrc_synth-a", (5.24, 4.0, 4.0), (0.0, 0.0, 0.0), (64, 128, 160), (16, 24, 32), 11),
    "jrc_synth-b": DatasetSpec("jrc_synth-b", (4.0, 4.0, 4.0), (36.0, 20.0, 44.0), (96, 128, 192), (16, 24, 32), 23),
}

_ORG = ("ecs", "pm", "mito_mem", "mito_lum", "mito_ribo", "golgi_mem", "golgi_lum", "ves_mem", "ves_lum", "endo_mem",
        "endo_lum", "er_mem", "er_lum", "cyto", "mito", "ves", "endo")

SAMPLE_CROPS: Tuple[CropSpec, ...] = (
    CropSpec("jrc_synth-a", "crop1", "train", 0, (8, 16, 16), 2, (80, 80, 80),
             ("ecs", "pm", "mito_mem", "mito_lum", "mito_ribo", "golgi_mem", "golgi_lum", "er_mem", "er_lum", "cyto",
              "mito"),
             ("labels 2x finer than raw s0 (anisotropic z)", "annotated-absent golgi_mem (complement_counts) and "
              "golgi_lum (read: s0 has no .zattrs)", "unknown classes (nuc, ves, endo, ...)",
              "golgi derivable as union of absent atoms"),
             absent=("golgi_mem", "golgi_lum"), no_s0_attrs=("golgi_lum",)),
    CropSpec("jrc_synth-b", "crop2", "train", 0, (59, -6, 140), 1, (40, 48, 48),
             ("ecs", "pm", "ves_mem", "ves_lum", "endo_mem", "endo_lum", "er_mem", "er_lum", "cyto", "ves", "endo"),
             ("labels at raw s0 resolution", "partly outside raw: 3 slices past the last z, 6 rows before y 0",
              "non-zero raw translation")),
    CropSpec("jrc_synth-b", "crop3", "train", 2, (1, 2, 1), 1, (16, 24, 24), ("nuc",),
             ("coarse labels on raw s2's grid (16 nm)", "nucleus-only crop (group without atoms)",
              "uint16 instance ids incl. 255 (encoding unknown 255, complement_counts.unknown 0)",
              "raw s0 and s1 chunks over the crop missing (matched-resolution download)"),
             instance_dtype={"nuc": "uint16"}),
    CropSpec("jrc_synth-a", "crop4", "train", 0, (16, 64, 96), 1, (32, 48, 48),
             ("ecs", "pm", "mito_mem", "mito_lum", "er_mem", "er_lum", "cyto", "mito"),
             ("labels at raw s0 resolution (anisotropic)", "raw s0 chunks under the first half (z) of the crop "
              "missing: reads back as zeros (crashed download)")),
    CropSpec("jrc_synth-b", "crop5", "validate", 0, (8, 72, 150), 2, (80, 80, 80),
             ("ecs", "pm", "mito_mem", "mito_lum", "golgi_mem", "golgi_lum", "ves_mem", "ves_lum", "endo_mem",
              "endo_lum", "er_mem", "er_lum", "cyto", "mito"),
             ("labels 2x finer than raw s0 (isotropic)", "validation crop", "ves/golgi groups derivable from atoms")),
)

# grey levels (uint8) per atomic class id: membranes ~15-20 darker than their lumens
_GREY = {ATOMIC_IDS[k]: v for k, v in {
    "cyto": 136, "ecs": 128, "pm": 104, "mito_mem": 100, "mito_lum": 120, "mito_ribo": 92, "golgi_mem": 106,
    "golgi_lum": 126, "ves_mem": 104, "ves_lum": 124, "endo_mem": 106, "endo_lum": 130, "er_mem": 106,
    "er_lum": 126, "ne_mem": 100, "nucpl": 144, "hchrom": 110}.items()}
_NOISE_STD = 16.5   # after a light blur (FIB-SEM noise is not white at 4 nm)
_BLUR_VOX = 0.6


def raw_location(root: str, dataset: str) -> str:
    return os.path.join(str(root), dataset, f"{dataset}.zarr", RAW_PATH)


def crop_location(root: str, dataset: str, crop: str) -> str:
    return os.path.join(str(root), dataset, f"{dataset}.zarr", GT_PATH, crop)


def crop_grid(spec: CropSpec) -> Grid:
    """The label s0 grid of a sample crop, derived from its raw anchor (corner on a raw corner)."""
    raw = SAMPLE_DATASETS[spec.dataset].grid(spec.raw_level)
    vs = tuple(v / spec.ratio for v in raw.voxel_size_nm)
    corner = tuple(c + s * v for c, s, v in zip(raw.corner_nm, spec.raw_start, raw.voxel_size_nm))
    return Grid.from_corner(vs, corner, spec.shape)


# ----------------------------------------------------------------------------------- the scene
@dataclass
class _Obj:
    kind: str                     # mito, er, golgi, ves, endo, nuc
    centre: np.ndarray            # world nm (z, y, x)
    radii: np.ndarray             # semi-axes nm (ellipsoid) or (radius, half-length, 0) for a tube
    rot: np.ndarray               # 3x3 rotation
    membrane_nm: float
    inst: int = 0
    specks: List[Tuple[np.ndarray, float]] = field(default_factory=list)  # ribo / chromatin blobs

    @property
    def reach(self) -> float:
        return float(np.max(self.radii)) + 4.0


@dataclass
class _Wall:
    axis: int                      # axis the ECS slab is perpendicular to
    pos: float
    width: float
    amp: Tuple[float, float]
    period: Tuple[float, float]


def _rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


class _Scene:
    """World-coordinate organelles of one dataset; :meth:`render` paints any grid."""

    def __init__(self, ds: DatasetSpec, walls: Sequence[_Wall]):
        self.ds = ds
        self.rng = np.random.default_rng(ds.seed)
        self.walls = list(walls)
        self.objs: List[_Obj] = []
        self.counter: Dict[str, int] = {}
        box = ds.grid(0).box
        self.lo, self.hi = np.asarray(box.start_nm), np.asarray(box.stop_nm)

    # ---- placement
    def wall_sdf(self, p: np.ndarray) -> np.ndarray:
        """Approximate signed distance (nm) to the union of ECS slabs; p (..., 3) world nm."""
        out = np.full(p.shape[:-1], np.inf)
        for w in self.walls:
            others = [a for a in range(3) if a != w.axis]
            h = w.pos + sum(w.amp[i] * np.sin(2 * np.pi * p[..., others[i]] / w.period[i]) for i in range(2))
            dh = [w.amp[i] * 2 * np.pi / w.period[i] * np.cos(2 * np.pi * p[..., others[i]] / w.period[i]) for i in range(2)]
            norm = np.sqrt(1 + dh[0] ** 2 + dh[1] ** 2)
            out = np.minimum(out, (np.abs(p[..., w.axis] - h) - w.width / 2) / norm)
        return out

    def _free(self, c: np.ndarray, reach: float, avoid: Sequence[Tuple[np.ndarray, np.ndarray]]) -> bool:
        if float(self.wall_sdf(c[None])[0]) < 0.6 * reach + 8:  # organelles are clipped at the pm anyway
            return False
        for o in self.objs:
            if np.linalg.norm(c - o.centre) < 0.75 * (reach + o.reach) + 4:  # rotated shapes rarely touch
                return False
        return not any(np.all(c + reach > lo) and np.all(c - reach < hi) for lo, hi in avoid)

    def place(self, kind: str, n: int, region: Tuple[np.ndarray, np.ndarray], avoid=(), tries: int = 800) -> int:
        """Place up to ``n`` objects of ``kind`` with centres inside ``region`` (world box)."""
        lo, hi = np.asarray(region[0], float), np.asarray(region[1], float)
        placed = 0
        for _ in range(tries):
            if placed == n:
                break
            centre = lo + self.rng.random(3) * (hi - lo)
            radii = self._radii(kind)
            if self._free(centre, float(np.max(radii)) + 4.0, avoid):
                o = self._make(kind, centre, radii)
                self.counter[kind] = self.counter.get(kind, 0) + 1
                o.inst = self.counter[kind]
                self.objs.append(o)
                placed += 1
        return placed

    def place_at(self, kind: str, box, frac) -> None:
        """Place one object of ``kind`` at fractional position ``frac`` (z, y, x) of a world
        box, whatever its neighbours (overlaps resolve by painting order)."""
        lo, hi = np.asarray(box[0], float), np.asarray(box[1], float)
        o = self._make(kind, lo + np.asarray(frac, float) * (hi - lo), self._radii(kind))
        self.counter[kind] = self.counter.get(kind, 0) + 1
        o.inst = self.counter[kind]
        self.objs.append(o)

    def add_nucleus(self, centre, radii, inst: int) -> None:
        rng = self.rng
        o = _Obj("nuc", np.asarray(centre, float), np.asarray(radii, float), _rotation(rng), 10.0, inst)
        for _ in range(14):  # heterochromatin blobs near the envelope
            d = rng.normal(size=3)
            d /= np.linalg.norm(d)
            o.specks.append((o.centre + o.rot @ (d * o.radii * 0.78), float(rng.uniform(14, 24))))
        self.objs.append(o)

    def _radii(self, kind: str) -> np.ndarray:
        """Size of a new object (nm): ellipsoid semi-axes, or (radius, half length, 0) for a tube."""
        u = self.rng.uniform
        sizes = {
            "mito": lambda: np.array([u(70, 100), u(36, 50), u(32, 46)]),
            "er": lambda: np.array([u(14, 20), u(60, 110), 0.0]),
            "golgi": lambda: np.array([56.0, u(80, 100), u(70, 90)]),   # stack of 4 cisternae
            "ves": lambda: np.full(3, u(18, 28)),
            "endo": lambda: np.array([u(45, 65), u(45, 65), u(45, 65)]),
        }
        if kind not in sizes:
            raise CellMapError(f"unknown organelle kind {kind!r}")
        return sizes[kind]()

    def _make(self, kind: str, c: np.ndarray, r: np.ndarray) -> _Obj:
        rot = _rotation(self.rng)
        membrane = {"mito": 10.0, "er": 6.0, "golgi": 5.0, "ves": 6.0, "endo": 8.0}[kind]
        o = _Obj(kind, c, r, rot, membrane)
        if kind == "mito":  # ribosome-like dark specks in the matrix
            for _ in range(int(self.rng.integers(2, 5))):
                v = self.rng.uniform(-0.45, 0.45, size=3) * r
                o.specks.append((c + rot @ v, float(self.rng.uniform(6, 9))))
        return o

    # ---- rendering
    @staticmethod
    def _ellipsoid_sdf(q: np.ndarray, radii: np.ndarray) -> np.ndarray:
        return (np.sqrt(np.sum((q / radii) ** 2, axis=-1)) - 1.0) * float(np.min(radii))

    def _sdf(self, o: _Obj, p: np.ndarray):
        """(sdf of the whole object, sdf of the lumen) at world points p (..., 3)."""
        q = (p - o.centre) @ o.rot  # into the object frame
        if o.kind == "er":
            t = np.clip(q[..., 0], -o.radii[1], o.radii[1])
            d = np.sqrt((q[..., 0] - t) ** 2 + q[..., 1] ** 2 + q[..., 2] ** 2) - o.radii[0]
            return d, d + o.membrane_nm
        if o.kind == "golgi":
            sd = np.full(p.shape[:-1], np.inf)
            for k in range(4):
                qq = q - np.array([-42.0 + 28.0 * k, 0.0, 0.0])
                sd = np.minimum(sd, self._ellipsoid_sdf(qq, np.array([12.0, o.radii[1] * (1 - 0.1 * abs(k - 1.5)),
                                                                        o.radii[2] * (1 - 0.1 * abs(k - 1.5))])))
            return sd, sd + o.membrane_nm
        d = self._ellipsoid_sdf(q, o.radii)
        return d, d + o.membrane_nm

    _ATOMS = {"mito": ("mito_mem", "mito_lum"), "er": ("er_mem", "er_lum"), "golgi": ("golgi_mem", "golgi_lum"),
              "ves": ("ves_mem", "ves_lum"), "endo": ("endo_mem", "endo_lum"), "nuc": ("ne_mem", "nucpl")}

    def render(self, grid: Grid) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        """Paint the scene at the voxel centres of ``grid``: (atom-id map uint8, instance maps
        {mito, ves, endo, nuc} as int32), arrays (z, y, x)."""
        axes = [grid.axis_centres_nm(a) for a in range(3)]
        pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
        atom = np.full(grid.shape, ATOMIC_IDS["cyto"], np.uint8)
        ws = self.wall_sdf(pts)
        cell = ws >= 8.0  # organelles stay inside the cell, inside the plasma membrane
        atom[ws < 8.0] = ATOMIC_IDS["pm"]
        atom[ws < 0] = ATOMIC_IDS["ecs"]
        inst = {k: np.zeros(grid.shape, np.int32) for k in ("mito", "ves", "endo", "nuc")}
        for o in self.objs:
            win = []
            for a in range(3):
                i0 = int(np.searchsorted(axes[a], o.centre[a] - o.reach - 1))
                i1 = int(np.searchsorted(axes[a], o.centre[a] + o.reach + 1))
                win.append(slice(i0, i1))
            win = tuple(win)
            if any(s.stop <= s.start for s in win):
                continue
            sd, lum = self._sdf(o, pts[win])
            region = (sd < 0) & cell[win]
            if not region.any():
                continue
            mem_id, lum_id = (ATOMIC_IDS[n] for n in self._ATOMS[o.kind])
            sub = atom[win]
            sub[region] = mem_id
            sub[region & (lum < 0)] = lum_id
            for c, r in o.specks:
                blob = np.sum((pts[win] - c) ** 2, axis=-1) < r * r
                if o.kind == "mito":
                    sub[blob & (sub == lum_id)] = ATOMIC_IDS["mito_ribo"]
                else:
                    sub[blob & region & (lum < 0)] = ATOMIC_IDS["hchrom"]
            if o.kind in inst:
                inst[o.kind][win][region] = o.inst
        for kind, m in inst.items():  # an instance covers only voxels still painted with its atoms
            ids = [ATOMIC_IDS[a] for a in self._ATOMS[kind]] + ([ATOMIC_IDS["mito_ribo"]] if kind == "mito" else [])
            ids += [ATOMIC_IDS["hchrom"]] if kind == "nuc" else []
            m[~np.isin(atom, ids)] = 0
        return atom, inst


def _scene(ds: DatasetSpec) -> _Scene:
    crops = {c.crop: crop_grid(c).box for c in SAMPLE_CROPS if c.dataset == ds.name}
    box = lambda name, shrink=0.0: (np.asarray(crops[name].start_nm) + shrink, np.asarray(crops[name].stop_nm) - shrink)  # noqa: E731
    whole = (np.asarray(ds.grid(0).box.start_nm), np.asarray(ds.grid(0).box.stop_nm))
    if ds.name == "jrc_synth-a":
        s = _Scene(ds, [_Wall(2, 215.0, 40.0, (14.0, 10.0), (260.0, 200.0)),
                        _Wall(1, 345.0, 44.0, (12.0, 16.0), (230.0, 300.0))])
        layout = {"crop1": [("mito", (0.3, 0.3, 0.35)), ("mito", (0.7, 0.65, 0.4)), ("mito", (0.3, 0.8, 0.2)),
                            ("er", (0.75, 0.2, 0.3)), ("er", (0.2, 0.6, 0.65)), ("er", (0.55, 0.45, 0.7))],
                  "crop4": [("mito", (0.5, 0.2, 0.3)), ("mito", (0.5, 0.8, 0.7)),
                            ("er", (0.3, 0.25, 0.75)), ("er", (0.7, 0.8, 0.25))]}
        for crop, objs in layout.items():
            for kind, frac in objs:
                s.place_at(kind, box(crop), frac)
        no_golgi = [box("crop1")]  # crop1 annotates golgi as absent: keep golgi out of it
        s.place("golgi", 1, whole, avoid=no_golgi)
        s.place("mito", 4, whole)
        s.place("er", 6, whole)
        s.place("ves", 14, whole, avoid=no_golgi)
        s.place("endo", 3, whole, avoid=no_golgi)
    else:
        s = _Scene(ds, [_Wall(2, 792.0, 48.0, (16.0, 12.0), (240.0, 280.0))])
        c3 = crops["crop3"]
        z0, y0, x0 = c3.start_nm
        s.add_nucleus((z0 + 128, y0 + 104, x0 + 110), (110, 118, 124), inst=255)
        s.add_nucleus((z0 + 150, y0 + 286, x0 + 282), (104, 112, 120), inst=300)
        layout = {"crop5": [("golgi", (0.5, 0.3, 0.35)), ("mito", (0.3, 0.75, 0.3)), ("mito", (0.75, 0.75, 0.6)),
                            ("er", (0.2, 0.3, 0.7)), ("er", (0.8, 0.2, 0.65)), ("endo", (0.8, 0.5, 0.2))],
                  "crop2": [("endo", (0.5, 0.3, 0.3)), ("er", (0.3, 0.7, 0.5)), ("er", (0.7, 0.75, 0.2))]}
        for crop, objs in layout.items():
            for kind, frac in objs:
                s.place_at(kind, box(crop), frac)
        s.place("ves", 5, box("crop5"))
        s.place("ves", 6, box("crop2"))
        s.place("mito", 5, whole)
        s.place("er", 6, whole)
        s.place("ves", 12, whole)
    return s


# ----------------------------------------------------------------------------------- writing
def _ome(scales, translations, name: str) -> dict:
    return {"multiscales": [{
        "version": "0.4", "name": name,
        "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
        "datasets": [{"path": f"s{i}", "coordinateTransformations": [
            {"type": "scale", "scale": [round(v, 6) for v in s]},
            {"type": "translation", "translation": [round(v, 6) for v in t]}]}
            for i, (s, t) in enumerate(zip(scales, translations))]}]}


def _block_mean(a: np.ndarray) -> np.ndarray:
    z, y, x = (s // 2 * 2 for s in a.shape)
    b = a[:z, :y, :x].astype(np.float64).reshape(z // 2, 2, y // 2, 2, x // 2, 2).mean(axis=(1, 3, 5))
    return b


def _block_mode(a: np.ndarray) -> np.ndarray:
    """2x2x2 block mode (ties -> the smaller value), for label pyramids."""
    z, y, x = (s // 2 * 2 for s in a.shape)
    b = a[:z, :y, :x].reshape(z // 2, 2, y // 2, 2, x // 2, 2).transpose(0, 2, 4, 1, 3, 5).reshape(z // 2, y // 2, x // 2, 8)
    if a.max(initial=0) <= 1:  # binary: the mode is 1 when more than 4 of 8 voxels are 1
        return (b.sum(-1, dtype=np.int32) > 4).astype(a.dtype)
    b = np.sort(b, axis=-1)
    counts = np.stack([(b == b[..., k:k + 1]).sum(-1) for k in range(8)], axis=-1)
    return np.take_along_axis(b, counts.argmax(-1)[..., None], axis=-1)[..., 0].astype(a.dtype)


def _em(atom: np.ndarray, rng, vs: Tuple[float, ...]) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    lut = np.full(256, _GREY[ATOMIC_IDS["cyto"]], np.float32)
    for k, v in _GREY.items():
        lut[k] = v
    img = lut[atom]
    sig = [_BLUR_VOX * min(vs) / v for v in vs]
    img = gaussian_filter(img, sig)
    # slow shading: smooth noise on an 8x coarser grid, upsampled linearly
    from scipy.ndimage import zoom

    coarse = gaussian_filter(rng.normal(0, 1, tuple(s // 8 + 2 for s in atom.shape)), 1.0)
    shade = zoom(coarse, [(s + 0.0) / c for s, c in zip(atom.shape, coarse.shape)], order=1)[
        tuple(slice(0, s) for s in atom.shape)].astype(np.float32)
    shade *= 5.0 / max(float(shade.std()), 1e-6)
    noise = gaussian_filter(rng.normal(0, 1, atom.shape).astype(np.float32), 0.5)
    noise *= _NOISE_STD / max(float(noise.std()), 1e-6)
    img = img + shade + noise
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _write_raw(root: str, ds: DatasetSpec, scene: _Scene) -> None:
    grid = ds.grid(0)
    atom, _ = scene.render(grid)
    em = _em(atom, np.random.default_rng(ds.seed + 1000), grid.voxel_size_nm)
    zroot = os.path.join(root, ds.name, f"{ds.name}.zarr")
    for p in (zroot, os.path.join(zroot, "recon-1"), os.path.join(zroot, "recon-1", "em")):
        _zarr.create_group(p)
    g = _zarr.create_group(raw_location(root, ds.name))
    levels, scales, trans = [em], [], []
    for n in range(3):
        gl = ds.grid(n)
        scales.append(gl.voxel_size_nm)
        trans.append(gl.translation_nm)
        if n:
            levels.append(np.clip(np.rint(_block_mean(levels[-1])), 0, 255).astype(np.uint8))
        _zarr.create_array(g, f"s{n}", levels[n], chunks=ds.chunks, fill_value=0)
    g.attrs.update(_ome(scales, trans, "fibsem-uint8"))


def _class_array(name: str, atom: np.ndarray, inst: Dict[str, np.ndarray], absent: bool, dtype: Optional[str]):
    cls = get_class(name)
    if cls.instance and name in inst:
        a = inst[name].astype(dtype or ("uint8" if inst[name].max() < 255 else "uint16"))
    else:
        ids = [ATOMIC_IDS[a] for a in atoms_of(name)]
        a = np.isin(atom, ids).astype(np.uint8)
    if absent:
        a = np.zeros_like(a)
    return a


def _write_crop(root: str, spec: CropSpec, scene: _Scene) -> None:
    grid = crop_grid(spec)
    atom, inst = scene.render(grid)
    loc = crop_location(root, spec.dataset, spec.crop)
    gt = os.path.join(root, spec.dataset, f"{spec.dataset}.zarr", "recon-1", "labels")
    for p in (os.path.dirname(gt), gt, os.path.join(gt, "groundtruth")):
        _zarr.create_group(p)
    _zarr.create_group(loc, {"cellmap": {"annotation": {
        "version": "0.1.1", "name": spec.crop, "description": "; ".join(spec.conditions),
        "created_by": ["cellmap.sample"], "created_with": ["cellmap.sample"], "start_date": None, "end_date": None,
        "duration_days": None, "protocol_uri": None, "class_names": list(spec.classes)}}})
    level1 = grid.resampled(tuple(v * 2 for v in grid.voxel_size_nm), rounding="floor")
    scales = [grid.voxel_size_nm, level1.voxel_size_nm]
    trans = [grid.translation_nm, level1.translation_nm]
    chunks = tuple(min(s, c) for s, c in zip(spec.shape, (32, 48, 48)))
    all_ids = np.zeros(grid.shape, np.uint8)
    for name in list(spec.classes) + ["all"]:
        if name == "all":
            data, kind, enc = all_ids, "semantic_segmentation", SEMANTIC_ENCODING
        else:
            absent = name in spec.absent
            data = _class_array(name, atom, inst, absent, spec.instance_dtype.get(name))
            cls = get_class(name)
            kind = "instance_segmentation" if cls.instance else "semantic_segmentation"
            enc = INSTANCE_ENCODING if cls.instance else SEMANTIC_ENCODING
            if not absent:  # `all`: CellMap ids of the most specific annotated class
                atoms = atoms_of(name)
                if len(atoms) == 1:
                    all_ids[data > 0] = cls.id
                else:
                    all_ids[(data > 0) & (all_ids == 0)] = cls.id
        atype = {"type": kind, "encoding": enc}
        g = _zarr.create_group(os.path.join(loc, name), {"cellmap": {"annotation": {
            "class_name": name, "annotation_type": atype}}})
        g.attrs.update(_ome(scales, trans, name))
        s0_attrs = None
        if name not in spec.no_s0_attrs:
            s0_attrs = {"cellmap": {"annotation": {"class_name": name, "annotation_type": atype, "complement_counts": {
                "absent": int((data == 0).sum()), "unknown": 0}}}}
        _zarr.create_array(g, "s0", data, chunks=chunks, attrs=s0_attrs, fill_value=0)
        if s0_attrs is None:  # like crop247/vim/s0: no .zattrs at all (zarr 3 writes an empty one)
            empty = os.path.join(loc, name, "s0", ".zattrs")
            if os.path.exists(empty):
                os.remove(empty)
        _zarr.create_array(g, "s1", _block_mode(data), chunks=chunks, fill_value=0)


def _remove_chunks(root: str, ds: DatasetSpec, level: int, grid: Grid, z_fraction: float = 1.0) -> List[str]:
    """Delete raw chunk files of ``level`` overlapping the first ``z_fraction`` of ``grid``'s box."""
    from cellmap.io import window_chunks

    lg = ds.grid(level)
    start, stop = lg.window_of_box(grid.box, snap="outward")
    stop = (start[0] + int(round((stop[0] - start[0]) * z_fraction)),) + tuple(stop[1:])
    chunks = tuple(max(1, c) for c in ds.chunks)
    removed = []
    for idx, _ in window_chunks(start, stop, chunks, lg.shape):
        f = os.path.join(raw_location(root, ds.name), f"s{level}", *map(str, idx))
        if os.path.exists(f):
            os.remove(f)
            removed.append(os.path.relpath(f, root))
    return removed


def _manifest_rows(specs: Sequence[CropSpec]) -> str:
    fmt = lambda v: "[" + ";".join(f"{x:g}" for x in v) + "]"  # noqa: E731
    lines = ["crop_name,dataset,class_label,voxel_size,translation,shape"]
    for s in specs:
        g = crop_grid(s)
        for c in s.classes:
            lines.append(f"{s.crop.replace('crop', '')},{s.dataset},{c},{fmt(g.voxel_size_nm)},{fmt(g.translation_nm)},"
                         f"{fmt(g.shape)}")
    return "\n".join(lines) + "\n"


def _datasplit_rows(root: str) -> List[DatasplitRow]:
    rows = []
    for s in SAMPLE_CROPS:
        zroot = os.path.join(root, s.dataset, f"{s.dataset}.zarr")
        rows.append(DatasplitRow(s.usage, zroot, RAW_PATH, zroot, f"{GT_PATH}/{s.crop}", s.classes))
    return rows


def build_sample(out_dir: str = "data", overwrite: bool = False, quiet: bool = False) -> str:
    """Write the sample dataset under ``out_dir`` (see the module docstring); returns the path
    of ``out_dir/datasplit.csv``.

    Skips the build when ``out_dir/sample_manifest.json`` records this sample version and
    every dataset folder exists (pass ``overwrite=True`` to rebuild). Datasets are built in a
    temporary folder inside ``out_dir`` and moved into place, so an interrupted build leaves
    no half-written dataset behind. Only the sample's own files are replaced.
    """
    out_dir = os.path.abspath(str(out_dir))
    marker = os.path.join(out_dir, "sample_manifest.json")
    split = os.path.join(out_dir, "datasplit.csv")
    if not overwrite and os.path.exists(marker) and os.path.exists(split):
        try:
            with open(marker, "r", encoding="utf-8") as f:
                done = json.load(f).get("version") == SAMPLE_VERSION
        except (OSError, json.JSONDecodeError):
            done = False
        complete = all(os.path.exists(os.path.join(raw_location(out_dir, d), ".zattrs")) for d in SAMPLE_DATASETS) and all(
            os.path.exists(os.path.join(crop_location(out_dir, c.dataset, c.crop), ".zgroup")) for c in SAMPLE_CROPS)
        if done and complete:
            if not quiet:
                print(f"sample dataset already built in {out_dir} (overwrite=True rebuilds)")
            return split
    os.makedirs(out_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".sample-build-", dir=out_dir)
    removed: Dict[str, List[str]] = {}
    try:
        for ds in SAMPLE_DATASETS.values():
            scene = _scene(ds)
            _write_raw(tmp, ds, scene)
            for spec in SAMPLE_CROPS:
                if spec.dataset == ds.name:
                    _write_crop(tmp, spec, scene)
        specs = {s.crop: s for s in SAMPLE_CROPS}
        a, b = SAMPLE_DATASETS["jrc_synth-a"], SAMPLE_DATASETS["jrc_synth-b"]
        removed["crop4"] = _remove_chunks(tmp, a, 0, crop_grid(specs["crop4"]), z_fraction=0.5)
        removed["crop3"] = (_remove_chunks(tmp, b, 0, crop_grid(specs["crop3"]))
                            + _remove_chunks(tmp, b, 1, crop_grid(specs["crop3"])))
        for d in SAMPLE_DATASETS:
            dst = os.path.join(out_dir, d)
            if os.path.exists(dst):
                shutil.rmtree(dst)
            os.replace(os.path.join(tmp, d), dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_datasplit(split, _datasplit_rows(out_dir), relative=True)
    write_text_atomic(os.path.join(out_dir, "train_crop_manifest.csv"), _manifest_rows(SAMPLE_CROPS))
    info = {"version": SAMPLE_VERSION, "datasets": {k: asdict(v) for k, v in SAMPLE_DATASETS.items()},
            "crops": [dict(asdict(s), label_voxel_size_nm=crop_grid(s).voxel_size_nm,
                           label_translation_nm=crop_grid(s).translation_nm) for s in SAMPLE_CROPS],
            "removed_raw_chunks": removed}
    write_text_atomic(marker, json.dumps(info, indent=1) + "\n")
    if not quiet:
        print(f"sample dataset written to {out_dir}\n  datasplit: {split}\n"
              f"  next: convert_zarr_to_nifti --datasplit {split}")
    return split


def sample(out_dir: str = "data", overwrite: bool = False, quiet: bool = False) -> None:
    """Build the CellMap-format sample dataset under OUT_DIR (default ``data``).

    Shell: ``cellmap_sample data`` or ``python -m cellmap.sample data --overwrite``.
    Python: ``cellmap.sample.build_sample("data")``. Writes two datasets (jrc_synth-a,
    jrc_synth-b), five crops, ``datasplit.csv``, ``train_crop_manifest.csv`` and
    ``sample_manifest.json``; skips the build when they are already there (``--overwrite``
    rebuilds).
    """
    build_sample(out_dir, overwrite=overwrite, quiet=quiet)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Console script ``cellmap_sample``: a thin Fire wrapper over :func:`build_sample`."""
    import fire

    fire.Fire(sample, command=list(argv) if argv is not None else None, name="cellmap_sample")


if __name__ == "__main__":
    main()
