"""Small synthetic converted-data sets (the converter's contract) for auto3dseg tests."""

import json
import os

import nibabel as nib
import numpy as np

#: Folder holding the tiny `tinyseg` Auto3DSeg template (a real BundleAlgo, CPU).
TINY_TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")

CLASS_NAMES = [{"name": "ecs", "index": [1]}, {"name": "mito_mem", "index": [2]}, {"name": "mito_lum", "index": [3]}]
IGNORE = 255


def write_nifti(path, array, spacing_nm=(8.0, 8.0, 8.0), origin_nm=(0.0, 0.0, 0.0), affine=None):
    """array axes (x, y, z); affine maps voxel centres to world nm."""
    if affine is None:
        affine = np.diag(list(spacing_nm) + [1.0])
        affine[:3, 3] = origin_nm
    img = nib.Nifti1Image(np.asarray(array), affine)
    img.header.set_xyzt_units("micron")  # NIfTI-1 has no nm code; tests do not depend on it
    os.makedirs(os.path.dirname(path), exist_ok=True)
    nib.save(img, path)
    return path


def make_case(rng, shape=(24, 24, 24), labels=(1, 2, 3), ignore_slab=False, zero_border=0):
    """(image uint8, label uint8): a mito (membrane 2 around lumen 3) and an ecs block, EM-like intensities."""
    lab = np.zeros(shape, np.uint8)
    x, y, z = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    c = [s // 2 for s in shape]
    r = np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2)
    if 2 in labels:
        lab[(r < 7) & (r >= 5)] = 2
    if 3 in labels:
        lab[r < 5] = 3
    if 1 in labels:
        lab[: shape[0] // 4] = 1
    means = {0: 130, 1: 100, 2: 60, 3: 180, IGNORE: 0}
    img = np.zeros(shape, np.float64)
    for v, m in means.items():
        img[lab == v] = m
    img = np.clip(img + rng.normal(0, 12, shape), 1, 255)
    if ignore_slab:
        lab[:, :, -3:] = IGNORE
        img[:, :, -3:] = 0
    if zero_border:
        img[:, :zero_border] = 0
    return img.astype(np.uint8), lab


def make_dataset(root, n=4, shape=(24, 24, 24), seed=0, testing=1):
    """Write n training pairs (+ testing images) and datalist.json under root; returns the datalist path.

    Cases differ in label sets (case 1 has no ecs, case 2 no mito) so MONAI's summary bug shows; case 0 has an
    ignore slab; folds alternate 0/1; the annotated bitmask marks every class present as annotated.
    """
    rng = np.random.default_rng(seed)
    label_sets = [(1, 2, 3), (2, 3), (1,), (1, 2, 3)]
    training = []
    for i in range(n):
        labels = label_sets[i % len(label_sets)]
        img, lab = make_case(rng, shape, labels, ignore_slab=(i == 0), zero_border=2 if i == 3 else 0)
        name = f"jrc_synth-a_crop{i}"
        write_nifti(os.path.join(root, "images", f"{name}_0000.nii.gz"), img)
        write_nifti(os.path.join(root, "labels", f"{name}.nii.gz"), lab)
        annotated = sum(1 << k for k, c in enumerate(CLASS_NAMES) if c["index"][0] in labels)
        training.append(
            {"image": f"images/{name}_0000.nii.gz", "label": f"labels/{name}.nii.gz", "fold": i % 2, "annotated": annotated}
        )
    tests = []
    for j in range(testing):
        img, _ = make_case(rng, shape)
        name = f"jrc_synth-b_crop{100 + j}"
        write_nifti(os.path.join(root, "images", f"{name}_0000.nii.gz"), img)
        tests.append({"image": f"images/{name}_0000.nii.gz"})
    datalist = {
        "name": "synthetic",
        "description": "synthetic converted crops",
        "modality": "CT",
        "sigmoid": True,
        "ignore_value": IGNORE,
        "class_names": CLASS_NAMES,
        "training": training,
        "testing": tests,
    }
    path = os.path.join(root, "datalist.json")
    with open(path, "w") as fh:
        json.dump(datalist, fh, indent=2)
    return path
