"""Regenerate ``tests/data/reference/instaordernet_inputs/`` by running the original InstaOrderNet
code (POSTECH-CVLab/InstaOrder, commit dd88ecee) on the CPU. Not run by the test suite.

Usage, from the repository root (needs scikit-image for its sample photographs)::

    python tests/make_instaordernet_input_fixtures.py /path/to/InstaOrder [--output DIR]

Steps (the fixture's README says the same for its readers):

1. Two photographs of ``skimage.data`` resized to 136 x 218 and 200 x 136 pixels, saved as PNG,
   with COCO-style instances (polygons, ``bbox`` = polygon extents) written to ``cases.json``.
2. Per flavour, the seeded weights of :func:`instaordernet_reference.seeded_state_dict` saved in
   the released checkpoint layout (``{"step", "state_dict"}``, keys ``module.<name>``) and loaded
   by the original's own ``load_state`` into the original's model class (every key checked).
3. The original's test procedure per image: image read with PIL, masks and boxes with its
   ``read_LVIS``, boxes enlarged by its ``Tester.expand_bbox`` (``enlarge_box: 3``), then its
   ``infer_order_sup_occ`` (o, patch 256), ``infer_order_sup_depth`` (d, resize 384) or
   ``infer_order_sup_occ_depth`` (od, resize 384) over all pairs. Every network call is recorded:
   input digests, logits.
4. ``original_outputs.json``: per flavour and image, the logits of every input, the final
   matrices and SHA-256 digests of every input's masks and RGB channels; ``rgb_grid.npz``: per
   image, the resize-mode RGB plane (the same for d and od) at every 16th pixel. Decisions
   closer than ``MARGIN`` to a tie are refused, so that the matrices are not at the mercy of
   rounding.

The original is a set of top-level modules (``utils``, ``models``, ``inference``), so its tree is
put first on ``sys.path``. What it imports but does not use here (scikit-learn metrics,
matplotlib, cvbase) is stubbed; ``.cuda()`` is made a no-op; ``np.int`` (removed from numpy) is
restored as ``int``.
"""

from __future__ import annotations

import argparse
import functools
import importlib.machinery
import importlib.util
import json
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import instaordernet_reference as ref
import numpy as np
import torch
from PIL import Image

from mask2former.utils.atomic import atomic_write, atomic_write_bytes, atomic_write_path

# Smallest accepted distance of a decision from a tie, in probability: logits within the tests'
# 1e-4 tolerance move the symmetrised probabilities by less than 3e-5, so the matrices cannot flip.
MARGIN = 1e-4
# Name -> (skimage.data photograph, crop rows, crop cols, output height, output width).
PHOTOS = {
    "coffee_136x218": ("coffee", slice(0, 400), slice(0, 600), 136, 218),
    "astronaut_200x136": ("astronaut", slice(0, 512), slice(90, 438), 200, 136),
}
# COCO polygons per image, x y pairs in pixels. Image 0: a blob, a quad overlapping it, a thin
# diagonal sliver, a shape in the top-left corner, a rectangle whose left edge sits at column 109
# and top edge at row 51 (OpenCV's nearest reads columns 108 / rows 50 where float32 indexing
# reads 109 / 51 for output column 192 / row 144 at 384). Image 1: a figure, a vertical line one
# pixel wide, a band along the bottom border whose top edge is row 125 (output row 240 at 384),
# a small shape on the right border overlapping the figure.
POLYGONS = {
    "coffee_136x218": [
        [
            [
                70 + 45 * np.cos(t) + 0.37 * np.sin(3 * t),
                68 + 35 * np.sin(t) + 0.21 * np.cos(5 * t),
            ]
            for t in np.linspace(0, 2 * np.pi, 19)[:-1]
        ],
        [[95.3, 40.2], [150.7, 36.9], [156.4, 100.6], [99.8, 104.1]],
        [[20.5, 120.2], [200.4, 15.3], [201.6, 16.6], [21.7, 121.5]],
        [[0.0, 0.0], [40.5, 0.0], [35.2, 25.8], [0.0, 30.1]],
        [[108.5, 50.5], [170.3, 50.5], [170.3, 110.7], [108.5, 110.7]],
    ],
    "astronaut_200x136": [
        [[30.2, 20.7], [95.6, 14.3], [110.9, 120.8], [60.4, 150.2], [22.8, 110.5]],
        [[59.6, 5.2], [60.4, 5.2], [60.4, 180.9], [59.6, 180.9]],
        [[0.0, 124.5], [136.0, 124.5], [136.0, 200.0], [0.0, 200.0]],
        [[118.4, 60.3], [136.0, 58.8], [136.0, 97.1], [104.7, 92.6]],
    ],
}


def _photo(name: str) -> np.ndarray:
    import cv2
    from skimage import data

    source, rows, cols, h, w = PHOTOS[name]
    image = getattr(data, source)()[rows, cols]
    return cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=cv2.INTER_AREA)


def _annotation(polygon: list[list[float]]) -> dict[str, Any]:
    flat = [round(float(v), 2) for point in polygon for v in point]
    xs, ys = flat[0::2], flat[1::2]
    x0, y0 = min(xs), min(ys)
    bbox = [x0, y0, round(max(xs) - x0, 2), round(max(ys) - y0, 2)]
    return {"segmentation": [flat], "bbox": bbox, "category_id": 1}


def write_cases(output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    spec = {"cases": []}
    for name in PHOTOS:
        photo = Image.fromarray(_photo(name))
        atomic_write_path(output / f"{name}.png", functools.partial(photo.save, optimize=True))
        anns = [_annotation(p) for p in POLYGONS[name]]
        spec["cases"].append({"name": name, "image": f"{name}.png", "annotations": anns})
    atomic_write_bytes(output / ref.CASES_FILE, (json.dumps(spec, indent=1) + "\n").encode())


def import_original(tree: Path) -> dict[str, Any]:
    """The original's modules, importable on a CPU-only machine (module docstring)."""
    import torchvision  # noqa: F401  (before the stubs below: torch._dynamo inspects modules)

    np.int = int  # type: ignore[attr-defined]
    stubs = {
        "sklearn": {},
        "sklearn.metrics": {"precision_score": None, "recall_score": None, "f1_score": None},
        "matplotlib": {},
        "matplotlib.pyplot": {},
        "cvbase": {},
    }
    for name, attrs in stubs.items():
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        module.__dict__.update(attrs)
        sys.modules[name] = module
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.UntypedStorage.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    sys.path.insert(0, str(tree))
    import inference
    import models

    from datasets import reader

    spec = importlib.util.spec_from_file_location("original_tools_test", tree / "tools/test.py")
    tools_test = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tools_test)
    return {"inference": inference, "models": models, "reader": reader, "test": tools_test}


class Recorder(torch.nn.Module):
    """Wraps the original's network and keeps every input and output."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls: list[tuple[torch.Tensor, Any]] = []

    def forward(self, x: torch.Tensor) -> Any:
        out = self.inner(x)
        self.calls.append((x.detach().clone(), out))
        return out


def original_model(orig: dict[str, Any], task: str, state: dict[str, torch.Tensor], tmp: Path):
    classes = {"o": 2, "d": 3, "od": [2, 3]}
    params = {
        "algo": f"InstaOrderNet_{task}",
        "backbone_arch": "resnet50_cls",
        "backbone_param": {"in_channels": 5, "num_classes": classes[task]},
        "optim": "SGD",
        "lr": 1e-4,
        "weight_decay": 1e-4,
        "use_rgb": True,
        "overlap_weight": 0.1,
        "distinct_weight": 0.9,
    }
    model = orig["models"].__dict__[params["algo"]](params, dist_model=False)
    path = tmp / f"InstaOrder_InstaOrderNet_{task}.pth.tar"
    torch.save({"step": 0, "state_dict": {"module." + k: v for k, v in state.items()}}, path)
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    model.load_state(str(path))
    loaded = model.model.state_dict()
    assert set(loaded) == {"module." + k for k in state}, "checkpoint keys differ"
    for k, v in state.items():
        assert torch.equal(loaded["module." + k], v), k
    assert not all(torch.equal(before[k], loaded[k]) for k in loaded), "nothing was loaded"
    model.switch_to("eval")
    model.model = Recorder(model.model)
    return model


def run_case(orig: dict[str, Any], model: Any, task: str, case: dict[str, Any]) -> dict[str, Any]:
    infer, reader = orig["inference"], orig["reader"]
    image = np.array(Image.open(case["file_name"]).convert("RGB"))
    h, w = image.shape[:2]
    decoded = [reader.read_LVIS(a, h, w) for a in case["annotations"]]
    modal = np.array([d[0] for d in decoded])
    bboxes = np.array([d[1] for d in decoded])
    assert np.array_equal(modal, case["masks"]), "mask decoding differs"
    tester = types.SimpleNamespace(args=types.SimpleNamespace(data={"enlarge_box": 3.0}))
    bboxes = orig["test"].Tester.expand_bbox(tester, bboxes)
    mode, size = ref.TASKS[task][:2]
    model.model.calls.clear()
    common = {"pairs": "all", "method": f"InstaOrderNet_{task}", "patch_or_image": mode}
    out: dict[str, Any] = {}
    if task == "o":
        occ = infer.infer_order_sup_occ(model, image, modal, bboxes, input_size=size, **common)
        out["occlusion"] = occ.tolist()
    elif task == "d":
        depth, _ = infer.infer_order_sup_depth(
            model, image, modal, bboxes, input_size=size, disp_select_method="", **common
        )
        out["depth"] = depth.tolist()
    else:
        occ, depth = infer.infer_order_sup_occ_depth(
            model, image, modal, bboxes, input_size=size, disp_select_method="", **common
        )
        out["occlusion"], out["depth"] = occ.tolist(), depth.tolist()
    calls = model.model.calls
    assert len(calls) == len(ref.ordered_pairs(len(modal)))
    heads = ref.TASKS[task][2]
    logits = {t: [] for t in heads}
    for _, y in calls:
        ys = y if isinstance(y, tuple) else (y,)
        for t, v in zip(heads, ys, strict=True):
            logits[t].append([float(a) for a in v[0]])
    out["logits"] = logits
    out["mask_sha256"] = [ref.digest(x[0, :2]) for x, _ in calls]
    out["rgb_sha256"] = [ref.digest(x[0, 2:]) for x, _ in calls]
    if mode == "resize":
        rgb = calls[0][0][0, 2:]
        assert all(torch.equal(x[0, 2:], rgb) for x, _ in calls)
        out["rgb_grid"] = rgb[:, :: ref.RGB_GRID, :: ref.RGB_GRID].numpy()
    check_margins(logits)
    return out


def check_margins(logits: dict[str, list[list[float]]]) -> None:
    """Refuse decisions within MARGIN of a tie (symmetrised as the original, [ION 8])."""
    if "occlusion" in logits:
        z = torch.tensor(logits["occlusion"], dtype=torch.float64).reshape(-1, 2, 2).sigmoid()
        p = torch.stack([z[:, 0, 1] + z[:, 1, 0], z[:, 0, 0] + z[:, 1, 1]], 1) / 2
        worst = float((p - 0.5).abs().min())
        assert worst > MARGIN, f"an occlusion decision is {worst:.2e} from 0.5"
    if "depth" in logits:
        z = torch.tensor(logits["depth"], dtype=torch.float64).reshape(-1, 2, 3).softmax(-1)
        p = (z[:, 0] + z[:, 1][:, [1, 0, 2]]) / 2
        top = p.topk(2, dim=1).values
        worst = float((top[:, 0] - top[:, 1]).min())
        assert worst > MARGIN, f"a depth decision is {worst:.2e} from a tie"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("original", type=Path, help="the original InstaOrder source tree")
    parser.add_argument("--output", type=Path, default=ref.FIXTURE_DIR, help="fixture folder")
    args = parser.parse_args()
    torch.set_num_threads(2)
    write_cases(args.output)
    cases = ref.load_cases(args.output)
    orig = import_original(args.original.resolve())
    outputs: dict[str, Any] = {}
    grids: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for task in ref.TASKS:
            model = original_model(orig, task, ref.seeded_state_dict(task, cases), Path(tmp))
            outputs[task] = {case["name"]: run_case(orig, model, task, case) for case in cases}
            for name, out in outputs[task].items():
                if "rgb_grid" in out:  # the same plane for d and od: stored once
                    grid = out.pop("rgb_grid")
                    assert name not in grids or np.array_equal(grids[name], grid)
                    grids[name] = grid
            print(f"{task}: done")
    atomic_write_bytes(args.output / ref.OUTPUTS_FILE, (json.dumps(outputs) + "\n").encode())
    atomic_write(args.output / ref.RGB_GRID_FILE, lambda f: np.savez_compressed(f, **grids))


if __name__ == "__main__":
    main()
