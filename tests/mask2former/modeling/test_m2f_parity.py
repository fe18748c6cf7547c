"""Numerical parity with the reference on the two parity fixtures (float32, CPU).

Weights are the reference's own random initialisation (``model_state_dict.pth``), loaded
strictly except the order-head keys; inputs are fed exactly as the fixture README describes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instaformer.config import get_cfg
from mask2former.modeling.meta_arch import MaskFormer
from mask2former.modeling.registry import META_ARCH_REGISTRY
from tests.support import REPO

ATOL = 1e-4
FIXTURES = ["swin-tiny-od-small", "r50-od-small"]


def _close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} vs {tuple(ref.shape)}"
    # backbone features of random ResNets reach ~150: allow float32 rounding relative to size
    tol = ATOL * max(1.0, ref.abs().max().item() / 100)
    err = (ours.float() - ref.float()).abs().max().item()
    assert err <= tol, f"{what}: max abs error {err:.3g} > {tol:.3g}"


@pytest.fixture(scope="module", params=FIXTURES)
def fixture(request, reference_dir: Path):
    folder = reference_dir / "parity" / request.param
    meta = json.loads((folder / "meta.json").read_text())
    cfg = get_cfg()
    cfg.merge_from_file(str(REPO / meta["base_config"]))
    cfg.merge_from_list(meta["config_overrides"])
    cfg.MODEL.GEOMETRIC_PREDICTOR.NAME = ""
    torch.set_num_threads(2)
    model: MaskFormer = META_ARCH_REGISTRY.get("MaskFormer")(cfg)
    state = torch.load(folder / "model_state_dict.pth", weights_only=True)
    model.load_state_dict(
        {k: v for k, v in state.items() if not k.startswith("geometric_predictor.")}, strict=True
    )
    model.eval()
    outputs = torch.load(folder / "outputs.pt", weights_only=True)
    inter = torch.load(folder / "intermediates.pt", weights_only=True)
    return folder, meta, model, outputs, inter


def _image(folder: Path, name: str) -> torch.Tensor:
    rgb = np.array(Image.open(folder / name).convert("RGB"))
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def test_backbone_and_pixel_decoder(fixture) -> None:
    folder, meta, model, _, inter = fixture
    image = meta["images"][0]
    images, _ = model.preprocess_image([{"image": _image(folder, image["file"])}])
    _close(images, inter["img0.backbone_input"], "backbone_input")
    with torch.no_grad():
        features = model.backbone(images)
        for name in ("res2", "res3", "res4", "res5"):
            _close(features[name], inter[f"img0.backbone.{name}"], name)
        mask_features, enc, multi = model.sem_seg_head.pixel_decoder.forward_features(features)
    _close(mask_features, inter["img0.pixel_decoder.mask_features"], "mask_features")
    _close(enc, inter["img0.pixel_decoder.transformer_encoder_features"], "encoder features")
    for i in range(3):
        _close(multi[i], inter[f"img0.pixel_decoder.multi_scale_features{i}"], f"multi-scale {i}")


@pytest.mark.parametrize("index", [0, 1])
def test_decoder_and_postprocessing(fixture, index: int) -> None:
    folder, meta, model, out, _ = fixture
    info = meta["images"][index]
    p = f"img{index}."
    inputs = [
        {"image": _image(folder, info["file"]), "height": info["height"], "width": info["width"]}
    ]
    with torch.no_grad():
        images, sizes = model.preprocess_image(inputs)
        outputs, mask_embed, _ = model.run_network(images)
        result = model.inference(outputs, inputs, sizes, images.shape[-2:])[0]
    _close(outputs["pred_logits"], out[p + "pred_logits"], "pred_logits")
    _close(outputs["pred_masks"], out[p + "pred_masks"], "pred_masks")
    _close(mask_embed, out[p + "mask_embed"], "mask_embed")
    for j, aux in enumerate(outputs["aux_outputs"]):
        _close(aux["pred_logits"], out[f"{p}aux{j}.pred_logits"], f"aux{j}.pred_logits")
        if f"{p}aux{j}.pred_masks" in out:
            _close(aux["pred_masks"], out[f"{p}aux{j}.pred_masks"], f"aux{j}.pred_masks")
    assert len(outputs["aux_outputs"]) == len(
        [k for k in out if k.startswith(p + "aux") and k.endswith("logits")]
    )

    seg, segments = result["panoptic_seg"]
    assert torch.equal(result["panoptic_keep"], out[p + "panoptic_keep"])
    # the fixture's smallest argmax gap is ~1e-7: allow a handful of pixels
    assert (seg != out[p + "panoptic_seg"]).sum().item() <= 5
    assert [{k: s[k] for k in ("id", "isthing", "category_id")} for s in segments] == info[
        "segments_info"
    ]
    kept = result["panoptic_keep"].nonzero().flatten().tolist()
    assert all(s["query_index"] in kept for s in segments)

    sem = result["sem_seg"]
    _close(sem.max(0).values, out[p + "extra.sem_seg_max"], "sem_seg max")
    _close(sem.sum(0), out[p + "extra.sem_seg_sum"], "sem_seg sum")
    assert (sem.argmax(0) != out[p + "extra.sem_seg_argmax"]).sum().item() <= 5

    inst = result["instances"]
    _close(inst.scores, out[p + "extra.instances.scores"], "instance scores")
    assert torch.equal(inst.pred_classes, out[p + "extra.instances.pred_classes"])
    assert torch.equal(inst.query_index, out[p + "extra.instances.query_index"])
    assert inst.pred_masks.shape[-2:] == (info["height"], info["width"])
