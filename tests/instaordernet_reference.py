"""InstaOrderNet input-parity cases, shared by ``test_instaordernet_inputs.py`` and the script
that made their fixture (``make_instaordernet_input_fixtures.py``).

Shape shorthand: K instances, H x W image, S network input side, N calibration inputs.

The fixture (``tests/data/reference/instaordernet_inputs/``) holds two small photographs, COCO-style
instances on them (polygons and ``bbox``) and what the original InstaOrderNet code computed from
them. The weights are not stored: :func:`seeded_state_dict` rebuilds them from a seed, as the
fixture's generator did, so that their outputs depend on the input (the released initialisation,
Xavier with gain 0.02, gives logits that do not).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from instaformer.instaordernet.network import InstaOrderResNet
from instaformer.vocabulary import IMAGENET_MEAN, IMAGENET_STD
from mask2former.structures import decode_segmentation

FIXTURE_DIR = Path(__file__).resolve().parent / "data" / "reference" / "instaordernet_inputs"
CASES_FILE = "cases.json"  # images, instances
OUTPUTS_FILE = "original_outputs.json"  # the original's per-pair logits, matrices, input digests
RGB_GRID_FILE = "rgb_grid.npz"  # per image: the original's resize-mode RGB plane, subsampled
# Flavour -> (input mode, input side S, heads, weight seed), as the released configs.
TASKS: dict[str, tuple[str, int, tuple[str, ...], int]] = {
    "o": ("patch", 256, ("occlusion",), 11),
    "d": ("resize", 384, ("depth",), 12),
    "od": ("resize", 384, ("occlusion", "depth"), 13),
}
TEST_BOX_ENLARGE = 3.0  # the original's test crop (enlarge_box: 3 in its configs)
CALIBRATION_PAIRS = 3  # pairs per case in the BatchNorm / head calibration batch
RGB_GRID = 16  # resize mode: the RGB plane is stored at every 16th pixel


def load_cases(fixture_dir: Path = FIXTURE_DIR) -> list[dict[str, Any]]:
    """The fixture's cases: ``name``, ``file_name`` (PNG path), ``image`` uint8 array[H, W, 3]
    RGB, ``annotations`` (COCO dicts), ``masks`` uint8 array[K, H, W], ``boxes`` float64
    array[K, 4] xywh."""
    spec = json.loads((fixture_dir / CASES_FILE).read_text())
    cases = []
    for case in spec["cases"]:
        path = fixture_dir / case["image"]
        image = np.array(Image.open(path).convert("RGB"))
        h, w = image.shape[:2]
        anns = case["annotations"]
        masks = np.stack([decode_segmentation(a["segmentation"], h, w) for a in anns])
        cases.append(
            {
                "name": case["name"],
                "file_name": str(path),
                "image": image,
                "annotations": anns,
                "masks": masks.astype(np.uint8),
                "boxes": np.array([a["bbox"] for a in anns], dtype=np.float64),
            }
        )
    return cases


def ordered_pairs(k: int) -> list[tuple[int, int]]:
    """The original's order of network inputs: for each ``i < j``, ``(i, j)`` then ``(j, i)``."""
    return [p for i in range(k) for j in range(i + 1, k) for p in ((i, j), (j, i))]


def digest(x: torch.Tensor) -> str:
    """SHA-256 of a float32 tensor's bytes (C order)."""
    return hashlib.sha256(x.detach().float().contiguous().numpy().tobytes()).hexdigest()


def calibration_inputs(cases: list[dict[str, Any]], size: int) -> torch.Tensor:
    """Tensor[N, 5, S, S]: whole-image inputs of the first pairs of every case, sampled to S x S
    by integer indexing (a rule of its own, independent of the input code under test)."""
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    out = []
    for case in cases:
        h, w = case["image"].shape[:2]
        rows, cols = np.arange(size) * h // size, np.arange(size) * w // size
        rgb = (case["image"][rows][:, cols].astype(np.float32) / 255 - mean) / std
        masks = case["masks"][:, rows][:, :, cols].astype(np.float32)
        for a, b in ordered_pairs(len(masks))[:CALIBRATION_PAIRS]:
            out.append(np.concatenate([masks[[a, b]], rgb.transpose(2, 0, 1)]))
    return torch.from_numpy(np.stack(out))


def seeded_state_dict(task: str, cases: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Input-sensitive, well-conditioned weights of flavour ``task``, in the released names.

    Drawn from ``numpy.random.RandomState(seed)`` (a stream numpy keeps stable): convolutions
    He-normal; BatchNorm affine ``1 + 0.1 N`` / ``0.1 N``, the last BatchNorm of each residual
    branch scaled by 0.25 (so that rounding errors do not grow along the 16 blocks). BatchNorm
    statistics from one training-mode pass over :func:`calibration_inputs`. Each head's rows are
    random combinations of the centred pooled features of those inputs, scaled and shifted so
    that its logits over them have mean 0 and standard deviation 1 (rows along the directions in
    which the features vary keep the float32 error of the logits near 1e-6).
    """
    _, size, heads, seed = TASKS[task]
    net = InstaOrderResNet(tasks=heads)
    head_names = tuple(net.head_names.values())
    rng = np.random.RandomState(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith(head_names):
                continue
            draw = rng.standard_normal(tuple(p.shape))
            if p.dim() == 4:
                value = draw * np.sqrt(2.0 / p[0].numel())
            elif name.endswith("weight"):  # BatchNorm scale
                value = (1.0 + 0.1 * draw) * (0.25 if ".bn3." in name else 1.0)
            else:  # BatchNorm shift
                value = 0.1 * draw
            p.copy_(torch.from_numpy(value.astype(np.float32)))
        x = calibration_inputs(cases, size)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # cumulative average: one batch sets the statistics
        net.train()
        net(x)
        net.eval()
        pooled = net.features(x).double()  # N x 2048
        centred = pooled - pooled.mean(dim=0)
        for head in head_names:
            linear = getattr(net, head)
            mix = torch.from_numpy(rng.standard_normal((linear.out_features, len(centred))))
            weight = mix @ centred  # classes x 2048
            z = pooled @ weight.t()  # N x classes
            scale = 1.0 / z.std(dim=0)
            linear.weight.copy_((weight * scale[:, None]).float())
            linear.bias.copy_((-z.mean(dim=0) * scale).float())
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    return net.state_dict()
