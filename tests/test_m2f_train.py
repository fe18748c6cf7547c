"""Tiny-config MaskFormer on CPU: losses, gradients, freezing, empty and one-instance images."""

from __future__ import annotations

import math

import pytest
import torch

from instaformer.config import get_cfg
from instaformer.modeling import InstaFormer
from mask2former.modeling.adapters import ADAPTER_TYPES
from mask2former.modeling.meta_arch import MaskFormer
from mask2former.modeling.registry import META_ARCH_REGISTRY
from mask2former.structures import Instances

CONFIG = "configs/instaorder/maskformer2_R50_bs16_50ep.yaml"


def tiny_cfg(*opts: str, backbone: str = "swin"):
    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", "cpu",
            "MODEL.MASK_FORMER.HIDDEN_DIM", "32",
            "MODEL.MASK_FORMER.DIM_FEEDFORWARD", "64",
            "MODEL.MASK_FORMER.DEC_LAYERS", "4",
            "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "8",
            "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "64",
            "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
            "MODEL.SEM_SEG_HEAD.MASK_DIM", "32",
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5",
            "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1",
            "MODEL.MASK_FORMER.ADAPTER_DIM", "8",
            "MODEL.BACKBONE.FREEZE", "False",
            "MODEL.SEM_SEG_HEAD.FREEZE", "False",
        ]
    )  # fmt: skip
    if backbone == "swin":
        cfg.merge_from_list(
            [
                "MODEL.BACKBONE.NAME", "D2SwinTransformer",
                "MODEL.SWIN.EMBED_DIM", "16",
                "MODEL.SWIN.DEPTHS", "[1, 1, 2, 1]",
                "MODEL.SWIN.NUM_HEADS", "[1, 1, 2, 2]",
                "MODEL.SWIN.WINDOW_SIZE", "4",
            ]
        )  # fmt: skip
    else:
        cfg.merge_from_list(
            [
                "MODEL.RESNETS.STEM_OUT_CHANNELS", "8",
                "MODEL.RESNETS.RES2_OUT_CHANNELS", "16",
                "MODEL.RESNETS.WIDTH_PER_GROUP", "4",
                "MODEL.RESNETS.NORM", "BN",
                "MODEL.BACKBONE.FREEZE_AT", "0",
            ]
        )  # fmt: skip
    cfg.merge_from_list(list(opts))
    return cfg


def build(cfg) -> MaskFormer:
    return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)


def sample(h: int, w: int, num_instances: int) -> dict:
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    masks = torch.zeros((num_instances, h, w), dtype=torch.bool)
    for i in range(num_instances):
        masks[i, 4 * i : 4 * i + h // 2, 3 * i : 3 * i + w // 3] = True
    inst = Instances((h, w), gt_classes=torch.arange(num_instances) % 5, gt_masks=masks)
    return {"image": image, "height": h, "width": w, "instances": inst}


@pytest.mark.parametrize("backbone", ["swin", "resnet"])
def test_train_step_finite_and_every_parameter_gets_gradient(backbone: str) -> None:
    model = build(tiny_cfg(backbone=backbone))
    model.train()
    losses = model([sample(64, 48, 3), sample(40, 56, 2)])
    # 3 losses for the final prediction and for each of the 3 auxiliary ones (incl. loss_ce_i)
    assert len(losses) == 12 and {"loss_ce_0", "loss_mask_2", "loss_dice_1"} <= set(losses)
    total = sum(losses.values())
    assert math.isfinite(total.item())
    total.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad}"


def test_zero_and_one_instance_images_train() -> None:
    model = build(tiny_cfg())
    model.train()
    no_instances = sample(64, 64, 0)
    del no_instances["instances"]  # the mapper omits the key when no segment is left
    losses = model([no_instances, sample(64, 64, 1), sample(64, 64, 0)])
    total = sum(losses.values())
    assert math.isfinite(total.item())
    total.backward()
    losses = model([sample(64, 64, 0)])  # only empty targets: mask losses are exactly 0
    assert losses["loss_mask"].item() == 0 and losses["loss_dice"].item() == 0
    assert losses["loss_ce"].item() > 0


def test_freezing_keeps_only_adapters_trainable() -> None:
    # the FREEZE keys are InstaFormer's: its model (no order head here) passes them to MaskFormer
    cfg = tiny_cfg("MODEL.BACKBONE.FREEZE", "True", "MODEL.SEM_SEG_HEAD.FREEZE", "True")
    model = InstaFormer(cfg)
    assert model.geometric_predictor is None
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    adapters = {
        f"{mn}.{pn}"
        for mn, m in model.named_modules()
        if isinstance(m, ADAPTER_TYPES)
        for pn, _ in m.named_parameters()
    }
    # 3 decoder adapters + 1 encoder adapter, two linears each
    assert trainable == adapters and len(adapters) == 16
    model.train()
    sum(model([sample(64, 64, 2)]).values()).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n in trainable)


def test_inference_outputs_and_empty_selection() -> None:
    model = build(
        tiny_cfg(
            "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "1.0",  # nothing passes
        )
    )  # fmt: skip
    model.eval()
    with torch.no_grad():
        results = model(
            [{"image": torch.zeros(3, 50, 70, dtype=torch.uint8), "height": 25, "width": 35}]
        )
    (r,) = results
    seg, info = r["panoptic_seg"]
    assert seg.shape == (25, 35) and seg.dtype == torch.int32 and seg.eq(0).all() and info == []
    assert r["sem_seg"].shape == (5, 25, 35)
    assert r["panoptic_keep"].shape == (8,) and not r["panoptic_keep"].any()
    inst = r["instances"]
    assert inst.image_size == (25, 35) and inst.pred_masks.shape[1:] == (25, 35)


def test_adapters_output_zero_at_init() -> None:
    torch.manual_seed(0)
    with_adapters = build(tiny_cfg())
    torch.manual_seed(0)
    without = build(tiny_cfg("MODEL.MASK_FORMER.USE_ADAPTERS", "False"))
    state = {
        k: v
        for k, v in with_adapters.state_dict().items()
        if "adapter." not in k and "adapter_layers" not in k
    }
    without.load_state_dict(state, strict=True)
    with_adapters.eval()
    without.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a = with_adapters.run_network(x)[0]["pred_masks"]
        b = without.run_network(x)[0]["pred_masks"]
    assert torch.equal(a, b)
