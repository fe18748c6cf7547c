"""InstaOrderNet on a timm trunk (MODEL.INSTAORDERNET.BACKBONE "timm"): the first convolution
widened to the mask channels, re-standardised RGB, train steps, inference, train_net, weights."""

from __future__ import annotations

import copy
import math

import pytest
import timm
import torch

from instaformer.config import ConfigError, setup_cfg
from instaformer.instaordernet.meta_arch import InstaOrderNet, load_instaordernet_weights
from instaformer.instaordernet.network import TimmOrderNet
from instaformer.train import load_config, main
from instaformer.vocabulary import IMAGENET_MEAN, IMAGENET_STD
from mask2former.engine import default_argument_parser
from mask2former.modeling.backbone.timm_models import widen_first_conv

TINY = "configs/instaordernet/synthetic_od_tiny.yaml"


def _cfg(task: str = "od", name: str = "test_convnext", size: int = 64, *opts: str):
    overrides = ["MODEL.DEVICE", "cpu", "MODEL.INSTAORDERNET.INPUT_SIZE", str(size)]
    overrides += ["MODEL.INSTAORDERNET.BACKBONE", "timm", "MODEL.TIMM.NAME", name, *opts]
    return setup_cfg(f"configs/instaordernet/InstaOrderNet_{task}.yaml", overrides)


def _rgb_only(x: torch.Tensor) -> torch.Tensor:
    """Tensor[B, 3, S, S] -> Tensor[B, 5, S, S] with empty masks."""
    return torch.cat([torch.zeros_like(x[:, :2]), x], dim=1)


@pytest.mark.parametrize(
    ("name", "conv"), [("test_convnext", "stem.0"), ("test_vit", "patch_embed.proj")]
)
def test_widening_keeps_the_rgb_filters_and_adds_their_mean(name, conv):
    model = timm.create_model(name, num_classes=0)
    weight = model.get_submodule(conv).weight.detach().clone()  # O x 3 x k x k
    original = copy.deepcopy(model).eval()
    widen_first_conv(model, 2)
    wide = model.get_submodule(conv).weight
    assert wide.shape == (weight.shape[0], 5, *weight.shape[2:]) and wide.requires_grad
    assert torch.equal(wide[:, 2:], weight)
    assert torch.equal(wide[:, 0], weight.mean(dim=1)) and torch.equal(wide[:, 1], wide[:, 0])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # empty masks: the trunk sees exactly its pretrained RGB path
        torch.testing.assert_close(model.eval()(_rgb_only(x)), original(x), rtol=1e-5, atol=1e-5)


def test_trunk_pretrained_with_other_statistics_gets_its_own():
    model = InstaOrderNet(_cfg()).eval()  # test_convnext: mean 0.5, std 0.5
    assert model.net.restandardise
    trunk = copy.deepcopy(model.net.trunk)
    rgb = torch.rand(2, 3, 64, 64)
    imagenet = (rgb - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[
        :, None, None
    ]
    with torch.no_grad():
        ours = model.net.features(_rgb_only(imagenet))
        theirs = trunk(_rgb_only((rgb - 0.5) / 0.5))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    assert not InstaOrderNet(_cfg(name="resnet18")).net.restandardise  # ImageNet statistics


@pytest.mark.parametrize(
    ("task", "name"), [("o", "test_vit"), ("d", "test_convnext"), ("od", "test_vit")]
)
def test_train_step_and_inference(task, name):
    torch.manual_seed(0)
    model = InstaOrderNet(_cfg(task, name, 64))
    assert isinstance(model.net, TimmOrderNet)
    model.train()
    batch = [
        {
            "pair_input": torch.randn(5, 64, 64),
            "occlusion_target": torch.tensor([float(b == 0), float(b == 1)]),
            "depth_target": torch.tensor(b % 3),
            "overlap": torch.tensor(b == 2),
        }
        for b in range(3)
    ]
    losses = model(batch)
    total = sum(losses.values())
    assert math.isfinite(total.item()) and total.item() > 0
    total.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    heads = {"o": ["net.fc.weight"], "d": ["net.fc.weight"], "od": ["net.fc_occ.weight"]}
    assert all(h in dict(model.named_parameters()) for h in heads[task])
    masks = torch.zeros(3, 40, 50, dtype=torch.bool)
    masks[0, :20, :20] = masks[1, 10:30, 10:40] = masks[2, 25:, 30:] = True
    out = model.eval().predict(torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8), masks)
    if "o" in task:
        assert out["occlusion"].shape == (3, 3) and not out["occlusion"].diagonal().any()
    if "d" in task:
        assert out["depth"].shape == (3, 3) and (out["depth"].diagonal() == -1).all()


def test_bad_trunk_settings_name_the_key():
    with pytest.raises(ConfigError, match="INPUT_SIZE 60 is not a multiple of the patch side 16"):
        InstaOrderNet(_cfg("od", "test_vit", 60))
    with pytest.raises(ConfigError, match="BACKBONE must be 'InstaOrderResNet' or 'timm'"):
        InstaOrderNet(_cfg("od", "test_vit", 64, "MODEL.INSTAORDERNET.BACKBONE", "resnet50"))


def test_freeze_at_applies_after_the_widening():
    model = InstaOrderNet(_cfg("od", "test_vit", 64, "MODEL.TIMM.FREEZE_AT", "-1"))
    assert not any(p.requires_grad for p in model.net.trunk.parameters())
    assert all(p.requires_grad for n, p in model.net.named_parameters() if n.startswith("fc_"))


def test_trains_evaluates_and_reloads_through_train_net(tmp_path, synthetic_datasets, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(synthetic_datasets))
    opts = ["MODEL.INSTAORDERNET.BACKBONE", "timm", "MODEL.TIMM.NAME", "test_convnext"]
    argv = ["--config-file", TINY, "OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "2", *opts]
    args = default_argument_parser().parse_args(argv)
    cfg = load_config(args)
    results = main(cfg, args)
    assert set(results) == {"occlusion_order", "depth_order"}
    state = torch.load(tmp_path / "model_final.pth", weights_only=True)["model"]
    assert state["net.trunk.stem.0.weight"].shape[1] == 5  # widened, saved by name
    again = InstaOrderNet(cfg)
    load_instaordernet_weights(cfg, again, tmp_path / "model_final.pth")
    for key, value in again.state_dict().items():
        assert torch.equal(value, state[key]), key
