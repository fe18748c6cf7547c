"""InstaOrderNet test-time inputs against the original code ([ION 3.4]).

The fixture (tests/data/reference/instaordernet_inputs/, README there) holds what the original
InstaOrderNet code computed on two photographs with input-sensitive seeded weights: per network
input the logits and digests of the masks and RGB, per image the final matrices. Here the
project runs the same images, instances and weights end to end, from the dataset record through
its mapper and meta-architecture, batched.
"""

from __future__ import annotations

import json
import math

import cv2
import instaordernet_reference as ref
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from instaformer.config import setup_cfg
from instaformer.instaordernet.data import InstaOrderNetMapper
from instaformer.instaordernet.inputs import (
    PatchModeInputs,
    ResizeModeInputs,
    enlarge_boxes,
    normalize_rgb,
    pair_windows,
    patch_input,
)
from instaformer.instaordernet.meta_arch import InstaOrderNet, load_instaordernet_weights

LOGIT_TOL = 1e-4
CASES = ref.load_cases()
ORIGINAL = json.loads((ref.FIXTURE_DIR / ref.OUTPUTS_FILE).read_text())
with np.load(ref.FIXTURE_DIR / ref.RGB_GRID_FILE, allow_pickle=False) as _grids:
    RGB_GRIDS = {name: torch.from_numpy(_grids[name]) for name in _grids.files}


def _cfg(task: str):
    return setup_cfg(
        f"configs/instaordernet/InstaOrderNet_{task}.yaml",
        ["MODEL.DEVICE", "cpu", "MODEL.INSTAORDERNET.TEST_BOX_ENLARGE", str(ref.TEST_BOX_ENLARGE)],
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Flavour -> InstaOrderNet in eval mode with the fixture's weights, loaded from a file in
    the released checkpoint layout (built on first use)."""
    cache: dict[str, InstaOrderNet] = {}

    def get(task: str) -> InstaOrderNet:
        if task not in cache:
            state = ref.seeded_state_dict(task, CASES)
            path = tmp_path_factory.mktemp(task) / f"InstaOrder_InstaOrderNet_{task}.pth.tar"
            torch.save(
                {"step": 0, "state_dict": {"module." + k: v for k, v in state.items()}}, path
            )
            model = InstaOrderNet(_cfg(task))
            load_instaordernet_weights(_cfg(task), model, path)
            cache[task] = model.eval()
        return cache[task]

    return get


def _record(case: dict) -> dict:
    h, w = case["image"].shape[:2]
    k = len(case["annotations"])
    return {
        "file_name": case["file_name"],
        "image_id": case["name"],
        "height": h,
        "width": w,
        "annotations": case["annotations"],
        "instaorder": {"instance_ids": list(range(k)), "occlusion": [], "depth": []},
    }


def _run_with_logits(model: InstaOrderNet, inputs: list[dict]) -> tuple[dict, dict]:
    """The model's output for one image and the logits of every network input, in order."""
    captured: list[dict] = []
    handle = model.net.register_forward_hook(lambda m, i, out: captured.append(out))
    try:
        with torch.no_grad():
            (out,) = model(inputs)
    finally:
        handle.remove()
    return out, {t: torch.cat([c[t] for c in captured]) for t in model.tasks}


@pytest.mark.slow
@pytest.mark.parametrize("task", list(ref.TASKS))
def test_end_to_end_logits_and_matrices_match_the_original(task, models):
    model = models(task)
    mapper = InstaOrderNetMapper(**InstaOrderNetMapper.from_config(_cfg(task), is_train=False))
    for case in CASES:
        expected = ORIGINAL[task][case["name"]]
        out, logits = _run_with_logits(model, [mapper(_record(case))])
        for head in model.tasks:
            theirs = torch.tensor(expected["logits"][head])
            assert logits[head].shape == theirs.shape
            err = (logits[head] - theirs).abs().max().item()
            assert err <= LOGIT_TOL, (task, case["name"], head, err)
        k = len(case["annotations"])
        off = ~torch.eye(k, dtype=torch.bool)
        if "occlusion" in expected:
            assert torch.equal(out["occlusion"], torch.tensor(expected["occlusion"]))
        if "depth" in expected:
            # The original leaves its diagonal 0; the project writes -1 there.
            assert torch.equal(out["depth"][off], torch.tensor(expected["depth"])[off])
        # The cases are not vacuous: the logits vary with the pair, by far more than the tolerance.
        for head in model.tasks:
            assert logits[head].std(dim=0).min() > 500 * LOGIT_TOL


def _builder(task: str, case: dict):
    mode, size = ref.TASKS[task][:2]
    image = torch.from_numpy(case["image"]).permute(2, 0, 1)
    masks = torch.from_numpy(case["masks"]).bool()
    if mode == "patch":
        boxes = torch.from_numpy(case["boxes"])
        return PatchModeInputs(image, masks, boxes, size, ref.TEST_BOX_ENLARGE)
    return ResizeModeInputs(image, masks, size)


@pytest.mark.parametrize("task", list(ref.TASKS))
def test_inputs_equal_the_original_value_for_value_batched_or_not(task):
    for case in CASES:
        expected = ORIGINAL[task][case["name"]]
        pairs = torch.tensor(ref.ordered_pairs(len(case["masks"])))
        build = _builder(task, case)
        batched = build(pairs)
        single = torch.cat([build(pairs[p : p + 1]) for p in range(len(pairs))])
        assert torch.equal(batched, single)
        assert [ref.digest(x[:2]) for x in batched] == expected["mask_sha256"]
        if ref.TASKS[task][0] == "patch":
            assert [ref.digest(x[2:]) for x in batched] == expected["rgb_sha256"]
        else:
            grid = batched[0, 2:, :: ref.RGB_GRID, :: ref.RGB_GRID]
            torch.testing.assert_close(grid, RGB_GRIDS[case["name"]], rtol=0, atol=1e-6)


def test_float32_nearest_indices_would_differ_on_the_fixture():
    """The 218- and 136-pixel sides of the first image map to 384 with source indices that
    float32 scaling gets wrong (e.g. output column 192: OpenCV reads 108, float32 109)."""
    case = CASES[0]
    assert case["image"].shape[:2] == (136, 218)
    masks = torch.from_numpy(case["masks"]).float()
    ours = ResizeModeInputs(torch.from_numpy(case["image"]).permute(2, 0, 1), masks, 384)
    float32 = F.interpolate(masks[:, None], size=(384, 384), mode="nearest")[:, 0]
    differ = (ours.masks.float() != float32).nonzero()
    assert len(differ) > 0
    assert {192} <= set(differ[:, 2].tolist()) and {144} <= set(differ[:, 1].tolist())


def _unclipped_opencv_inputs(case: dict, pairs: torch.Tensor, size: int) -> torch.Tensor:
    """Patch-mode inputs with OpenCV bicubic on the float crop: no rounding, no clipping."""
    exact = _builder("o", case)(pairs)
    windows = pair_windows(enlarge_boxes(torch.from_numpy(case["boxes"]), 3.0), pairs).tolist()
    image = case["image"].astype(np.float32) / 255
    h, w = image.shape[:2]
    rgb = []
    for x0, y0, side in windows:
        crop = np.zeros((side, side, 3), np.float32)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
        crop[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
        rgb.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_CUBIC))
    rgb = torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2)
    assert rgb.min() < 0 or rgb.max() > 1  # the clip is active on these inputs
    return torch.cat([exact[:, :2], normalize_rgb(rgb)], dim=1)


def _torch_float_inputs(case: dict, pairs: torch.Tensor, size: int) -> torch.Tensor:
    """Patch-mode inputs with torch's float bicubic (the training resize, unclipped)."""
    image = torch.from_numpy(case["image"]).permute(2, 0, 1).float() / 255
    masks = torch.from_numpy(case["masks"]).float()
    windows = pair_windows(enlarge_boxes(torch.from_numpy(case["boxes"]), 3.0), pairs).tolist()
    return torch.stack(
        [
            patch_input(image, masks[[a, b]], x0, y0, side, size)
            for (a, b), (x0, y0, side) in zip(pairs.tolist(), windows, strict=True)
        ]
    )


@pytest.mark.slow
@pytest.mark.parametrize("variant", [_unclipped_opencv_inputs, _torch_float_inputs])
def test_without_uint8_rounding_and_clipping_the_logits_leave_the_tolerance(variant, models):
    """Resizing the patch in float instead of on the uint8 crop moves the logits beyond the
    tolerance that the project's inputs meet: the fixture would catch a missing clip."""
    model = models("o")
    worst = 0.0
    for case in CASES:
        expected = ORIGINAL["o"][case["name"]]
        pairs = torch.tensor(ref.ordered_pairs(len(case["masks"])))
        x = variant(case, pairs, 256)
        assert [ref.digest(v[2:]) for v in x] != expected["rgb_sha256"]
        with torch.no_grad():
            logits = model.net(x)["occlusion"]
        worst = max(worst, (logits - torch.tensor(expected["logits"]["occlusion"])).abs().max())
    assert worst > 10 * LOGIT_TOL, worst


def test_enlarged_boxes_follow_the_original_float64_arithmetic():
    """COCO box (348.52, 19.58, 10.4, 1.22): the original's float64 arithmetic puts the enlarged
    window's left edge at 347, the same formula in float32 at 348."""
    x, y, w, h = 348.52, 19.58, 10.4, 1.22
    side = max(math.sqrt(w * h * 3.0), w * 1.1, h * 1.1)
    expected = [int(x + w / 2.0 - side / 2.0), int(y + h / 2.0 - side / 2.0), int(side), int(side)]
    assert expected == [347, 14, 11, 11]
    boxes = torch.tensor([[x, y, w, h]], dtype=torch.float64)
    assert enlarge_boxes(boxes, 3.0)[0].tolist() == expected
    x32, y32, w32, h32 = boxes.float()[0]
    side32 = torch.maximum(torch.sqrt(w32 * h32 * 3.0), torch.maximum(w32 * 1.1, h32 * 1.1))
    assert int(x32 + w32 / 2.0 - side32 / 2.0) == 348


def test_mapper_keeps_the_annotation_boxes_exact():
    cfg = _cfg("o")
    mapper = InstaOrderNetMapper(**InstaOrderNetMapper.from_config(cfg, is_train=False))
    case = CASES[0]
    out = mapper(_record(case))
    boxes = out["instances"].gt_bbox_xywh
    assert boxes.dtype == torch.float64
    assert boxes.tolist() == [a["bbox"] for a in case["annotations"]]
    assert torch.equal(out["image"], torch.from_numpy(case["image"]).permute(2, 0, 1))
