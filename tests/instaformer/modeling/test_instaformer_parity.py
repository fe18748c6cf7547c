"""Whole-model parity with the reference fixtures, order head included (float32, CPU).

The model is built from the fixture's config and overrides, its ``model_state_dict.pth`` loaded
strictly, and the blind path run as the fixture README describes (one image per call, no ground
truth). The fixture's order rows are the queries kept by panoptic inference (things and stuff, in
query order), ours the thing segments; so the order head is also run through
``InstaFormer.run_order_head`` on the fixture's kept queries, which must reproduce the per-layer
logits and the final matrices; the blind output must equal that method on its segments' queries.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instaformer.config import get_cfg
from instaformer.modeling import InstaFormer, build_model
from instaformer.modeling.meta_arch import order_results
from tests.support import REPO

ATOL = 1e-4
TASKS = ("occlusion", "depth")


def _close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} vs {tuple(ref.shape)}"
    err = (ours.float() - ref.float()).abs().max().item() if ref.numel() else 0.0
    assert err <= ATOL, f"{what}: max abs error {err:.3g}"


@pytest.fixture(scope="module", params=["swin-tiny-od-small", "r50-od-small"])
def fixture(request, reference_dir: Path):
    folder = reference_dir / "parity" / request.param
    meta = json.loads((folder / "meta.json").read_text())
    cfg = get_cfg()
    cfg.merge_from_file(str(REPO / meta["base_config"]))
    cfg.merge_from_list(meta["config_overrides"])
    torch.set_num_threads(2)
    model = build_model(cfg)
    assert isinstance(model, InstaFormer)
    state = torch.load(folder / "model_state_dict.pth", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    outputs = torch.load(folder / "outputs.pt", weights_only=True)
    return folder, meta, model, outputs


def _input(folder: Path, info: dict) -> dict:
    rgb = np.array(Image.open(folder / info["file"]).convert("RGB"))
    image = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
    return {"image": image, "height": info["height"], "width": info["width"]}


@pytest.mark.parametrize("index", [0, 1])
def test_blind_path_matches_reference(fixture, index: int) -> None:
    folder, meta, model, ref = fixture
    info = meta["images"][index]
    p = f"img{index}."
    x = _input(folder, info)
    with torch.no_grad():
        result = model([x])[0]
        images, _ = model.preprocess_image([x])
        outputs, mask_embed, mask_features = model.run_network(images)
    _close(outputs["pred_logits"], ref[p + "pred_logits"], "pred_logits")
    _close(outputs["pred_masks"], ref[p + "pred_masks"], "pred_masks")
    _close(mask_embed, ref[p + "mask_embed"], "mask_embed")

    # segmentation results are kept next to the orders
    seg, segments = result["panoptic_seg"]
    assert torch.equal(result["panoptic_keep"], ref[p + "panoptic_keep"])
    assert (seg != ref[p + "panoptic_seg"]).sum().item() <= 5
    assert [{k: s[k] for k in ("id", "isthing", "category_id")} for s in segments] == info[
        "segments_info"
    ]
    _close(result["sem_seg"].max(0).values, ref[p + "extra.sem_seg_max"], "sem_seg max")
    _close(result["sem_seg"].sum(0), ref[p + "extra.sem_seg_sum"], "sem_seg sum")
    _close(result["instances"].scores, ref[p + "extra.instances.scores"], "instance scores")

    # the order head on the fixture's rows (kept queries, query order): logits per layer
    kept = ref[p + "panoptic_keep"].nonzero().flatten()
    with torch.no_grad():
        head_out = model.run_order_head(
            kept, mask_embed[0], outputs["pred_masks"][0], mask_features[0]
        )
    masks = (outputs["pred_masks"][0][kept] > 0).to(torch.uint8)
    assert torch.equal(masks, ref[p + "geom_in.binary_masks"])
    for task in TASKS:
        assert len(head_out[task]) == 2
        for layer, logits in enumerate(head_out[task]):
            _close(logits, ref[f"{p}geom_out.pred_{task}.layer{layer}"], f"{task} layer {layer}")
    final = order_results(head_out, TASKS)
    for task in TASKS:
        assert torch.equal(final[task], ref[p + task]), task

    # blind rows: the thing segments, through query_index; same function on those queries
    things = [s for s in segments if s["isthing"]]
    assert result["order_segment_ids"].tolist() == [s["id"] for s in things]
    queries = torch.tensor([s["query_index"] for s in things])
    assert all(q in kept.tolist() for q in queries.tolist())
    with torch.no_grad():
        expected = order_results(
            model.run_order_head(
                queries, mask_embed[0], outputs["pred_masks"][0], mask_features[0]
            ),
            TASKS,
        )
    k = len(things)
    for task in TASKS:
        assert result[task].dtype == torch.int64 and result[task].shape == (k, k)
        assert torch.equal(result[task], expected[task])
        torch.testing.assert_close(result[f"{task}_prob"], expected[f"{task}_prob"])
        assert (result[task].diagonal() == -1).all()
    assert result["depth_prob"].shape == (k, k, 3)
    assert result["occlusion_prob"].shape == (k, k)
