"""Training on synthetic crops: masking keeps a class that is visible everywhere but annotated in half the crops."""

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose, RandSpatialCropd

from auto3dseg.partial_loss import MaskedDiceBCELoss
from auto3dseg.partial_transforms import PartialLabelToChannelsd

SHAPE = (12, 12, 12)
ROI = (8, 8, 8)
INDEX = [[1], [2]]  # class 0 "bright" (label value 1), class 1 "dark" (label value 2)


@pytest.fixture
def one_thread():
    """Two shared cores: one intra-op thread is faster than oversubscribing."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _crop(seed: int, annotate_bright: bool):
    """Bright and dark 3^3 cubes on noise; bright is labelled only where annotated (unannotated crops hold
    more bright cubes, as an abundant unannotated organelle would); an x strip of ignore (255) voxels."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 0.15, SHAPE).astype(np.float32)
    label = np.zeros(SHAPE, dtype=np.uint8)
    cubes = [(2, -1.0)] * 2 + [(1, 1.0)] * (1 if annotate_bright else 3)
    for value, intensity in cubes:
        z, y, x = rng.integers(0, SHAPE[0] - 3, 3)
        image[z : z + 3, y : y + 3, x : x + 3] = intensity + rng.normal(0.0, 0.15, (3, 3, 3))
        label[z : z + 3, y : y + 3, x : x + 3] = value if (value == 2 or annotate_bright) else 0
    label[:, :, :2] = 255
    return {
        "image": MetaTensor(torch.from_numpy(image[None])),
        "label": MetaTensor(torch.from_numpy(label[None])),
        "annotated": 0b11 if annotate_bright else 0b10,
    }


def _train(items, partial: bool, steps: int = 80) -> torch.nn.Module:
    """The real label path (crop, then PartialLabelToChannelsd, DataLoader collation) and the real loss."""
    torch.manual_seed(0)
    transforms = Compose(
        [
            RandSpatialCropd(keys=["image", "label"], roi_size=ROI, random_size=False),
            PartialLabelToChannelsd(keys="label", class_index=INDEX, mode="loss", partial=partial),
        ]
    )
    transforms.set_random_state(0)
    loader = DataLoader(Dataset(items, transforms), batch_size=4, shuffle=True, num_workers=0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(8, 2, 1))
    loss_fn = MaskedDiceBCELoss(squared_pred=True, smooth_nr=0.0, smooth_dr=1e-5)  # the templates' settings
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    done = 0
    while done < steps:
        for batch in loader:
            assert batch["label"].dtype == torch.uint8 and batch["label"].shape[1:] == (2, *ROI)
            opt.zero_grad()
            loss_fn(net(batch["image"].as_tensor()), batch["label"].as_tensor()).backward()
            opt.step()
            done += 1
    return net


def test_masking_keeps_unannotated_visible_class_foreground(one_thread):
    items = [_crop(seed, annotate_bright=seed % 2 == 0) for seed in range(8)]
    unannotated = [it for it in items if it["annotated"] == 0b10]
    mean_prob = {}
    for partial in (True, False):
        net = _train(items, partial)
        with torch.no_grad():
            probs = [
                torch.sigmoid(net(it["image"].as_tensor()[None]))[0, 0][(it["image"][0] > 0.5)] for it in unannotated
            ]
        mean_prob[partial] = float(torch.cat(probs).mean())
    # masked: learnt from the annotated half, predicted in the unannotated half;
    # plain: the unannotated half teaches "bright = background"
    print("mean predicted probability of the bright class in unannotated crops", mean_prob)
    assert mean_prob[True] > 0.8, mean_prob
    assert mean_prob[True] - mean_prob[False] > 0.3, mean_prob
