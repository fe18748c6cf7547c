"""TimmBackbone: timm's own features for the same weights, shapes and strides, freezing, the
example configs, train_net on the synthetic twin (train, infer, save, load, resume) and the
pretrained-weights errors without network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

import mask2former.modeling  # noqa: F401  (registers the modules)
from instaformer.config import ConfigError, get_cfg
from instaformer.predictor import Predictor
from instaformer.preflight import weights_from_checkpoint
from instaformer.train import build_trainer, load_config, main, setup
from mask2former.engine import default_argument_parser
from mask2former.engine.optimizer import get_param_groups
from mask2former.modeling.backbone.timm_backbone import SimpleFeaturePyramid, TimmBackbone
from mask2former.modeling.backbone.timm_models import create_timm_model
from mask2former.modeling.meta_arch import build_backbone, pad_images
from mask2former.modeling.registry import META_ARCH_REGISTRY
from mask2former.utils.download import DownloadError
from tests.support import REPO
from tests.support.local_server import LocalServer

TINY = str(REPO / "configs" / "synthetic" / "instaformer_od_tiny_timm.yaml")
EXAMPLES = REPO / "configs" / "instaorder" / "occlusion_depth" / "all" / "timm"
STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


def _backbone_cfg(name: str, *opts: str):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "TimmBackbone"
    cfg.MODEL.TIMM.NAME = name
    cfg.merge_from_list(list(opts))
    return cfg


def _load_into_reference(backbone: TimmBackbone, reference: torch.nn.Module) -> None:
    """Copy the backbone's trunk weights into a full timm model, by parameter name."""
    result = reference.load_state_dict(backbone.trunk.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert all(k.startswith(("head", "norm", "fc_norm")) for k in result.missing_keys), result


@pytest.mark.parametrize("name", ["test_convnext", "convnext_tiny"])
def test_hierarchical_levels_equal_timm_features_only(name, tmp_path):
    backbone = build_backbone(_backbone_cfg(name)).eval()  # random weights (PRETRAINED False)
    weights = tmp_path / "trunk.pth"
    torch.save(backbone.trunk.state_dict(), weights)
    # timm's own multi-scale model, its weights loaded by timm from the same tensors
    features = timm.create_model(
        name,
        features_only=True,
        out_indices=(0, 1, 2, 3),
        pretrained=True,
        pretrained_cfg_overlay={"file": str(weights)},
    ).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ours = backbone(x)
        theirs = features(x)
    assert list(ours) == ["res2", "res3", "res4", "res5"]
    for (key, a), b in zip(ours.items(), theirs, strict=True):
        assert torch.equal(a, b), key
    channels = features.feature_info.channels()
    assert [s.channels for s in backbone.output_shape().values()] == channels
    assert {k: s.stride for k, s in backbone.output_shape().items()} == STRIDES


@pytest.mark.parametrize("name", ["test_vit", "vit_small_patch14_dinov2.lvd142m"])
def test_vit_trunk_equals_timm_forward_intermediates(name):
    backbone = build_backbone(_backbone_cfg(name)).eval()
    reference = timm.create_model(name, num_classes=0, dynamic_img_size=True).eval()
    _load_into_reference(backbone, reference)
    p = reference.patch_embed.patch_size[0]
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ours = backbone.trunk_features(x)
        # the padded image resized by p/16, so that the token grid is 64/16 x 96/16
        resized = F.interpolate(x, size=(4 * p, 6 * p), mode="bilinear", align_corners=False)
        theirs = reference.forward_intermediates(
            resized, indices=[len(reference.blocks) - 1], norm=True, intermediates_only=True
        )
        levels = backbone(x)
    assert len(ours) == 1 and torch.equal(ours[0], theirs[0])
    assert ours[0].shape == (2, reference.embed_dim, 4, 6)
    assert {k: tuple(v.shape) for k, v in levels.items()} == {
        k: (2, 256, 64 // s, 96 // s) for k, s in STRIDES.items()
    }


@pytest.mark.parametrize("name", ["test_convnext", "test_vit", "test_resnet", "vit14"])
def test_odd_input_sizes_are_padded_to_the_strides(name):
    if name == "vit14":  # a tiny plain ViT with DINOv2's patch side
        trunk = timm.create_model("test_vit", num_classes=0, patch_size=14, dynamic_img_size=True)
        backbone = TimmBackbone(trunk=trunk).eval()
    else:
        backbone = build_backbone(_backbone_cfg(name)).eval()
    assert backbone.size_divisibility == 32
    images = [torch.randn(3, 61, 97), torch.randn(3, 45, 33)]
    batch, sizes = pad_images(images, backbone.size_divisibility)
    assert tuple(batch.shape[-2:]) == (64, 128) and sizes == [(61, 97), (45, 33)]
    with torch.no_grad():
        out = backbone(batch)
    shapes = backbone.output_shape()
    for key, stride in STRIDES.items():
        assert shapes[key].stride == stride
        assert out[key].shape == (2, shapes[key].channels, 64 // stride, 128 // stride), key
    if backbone.plain:
        with pytest.raises(ValueError, match="multiples of 32; got 61 x 97"):
            backbone(images[0][None])


@pytest.mark.parametrize("name", ["test_convnext", "test_vit"])
def test_every_backbone_parameter_gets_a_gradient(name):
    backbone = build_backbone(_backbone_cfg(name, "MODEL.TIMM.DROP_PATH", "0.1")).train()
    out = backbone(torch.randn(2, 3, 64, 64))
    sum(v.square().mean() for v in out.values()).backward()
    missing = [n for n, p in backbone.named_parameters() if p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in backbone.parameters())
    # the classifier head and what follows the last used level are gone
    assert not any(n.startswith("trunk.head.") for n, _ in backbone.named_parameters())


def test_vit_position_embedding_and_tokens_take_the_embedding_weight_decay():
    backbone = build_backbone(_backbone_cfg("test_vit"))
    decays = {0.05: "decay", 0.0: "norm", 0.01: "embed"}
    groups = get_param_groups(
        backbone,
        base_lr=1.0,
        weight_decay=0.05,
        weight_decay_norm=0.0,
        weight_decay_embed=0.01,
        backbone_multiplier=1.0,
    )
    ids = {id(p): decays[g["weight_decay"]] for g in groups for p in g["params"]}
    kind = {n: ids[id(p)] for n, p in backbone.named_parameters()}
    assert kind["trunk.pos_embed"] == kind["trunk.cls_token"] == "embed"
    assert kind["trunk.blocks.0.attn.qkv.weight"] == "decay"
    assert kind["trunk.blocks.0.norm1.weight"] == "norm"
    assert list(kind.values()).count("embed") == 2


def test_freeze_at_freezes_leading_groups_and_their_batch_norms():
    backbone = build_backbone(_backbone_cfg("test_resnet", "MODEL.TIMM.FREEZE_AT", "2"))
    frozen = {n for n, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen and all(
        n.startswith(("trunk.conv1.", "trunk.bn1.", "trunk.layer1.")) for n in frozen
    )
    assert all(p.requires_grad for n, p in backbone.named_parameters() if "layer2." in n)
    frozen_bn = type(backbone.trunk.layer1[0].bn1).__name__
    assert frozen_bn == "FrozenBatchNorm2d"
    assert isinstance(backbone.trunk.layer2[0].bn1, torch.nn.BatchNorm2d)

    vit = build_backbone(_backbone_cfg("test_vit", "MODEL.TIMM.FREEZE_AT", "-1"))
    assert not any(p.requires_grad for p in vit.trunk.parameters())
    assert all(p.requires_grad for p in vit.pyramid.parameters())
    with pytest.raises(ConfigError, match="FREEZE_AT must be -1, 0 or a group count"):
        build_backbone(_backbone_cfg("test_vit", "MODEL.TIMM.FREEZE_AT", "-2"))


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (("MODEL.TIMM.NAME", "no_such_model"), "MODEL.TIMM.NAME 'no_such_model' is not a timm"),
        (("MODEL.TIMM.NAME", "convnext_tiny.bogus"), "Invalid pretrained tag"),
        (("MODEL.TIMM.NAME", "test_vit", "MODEL.TIMM.OUT_INDICES", "[2, 5]"), "takes one block"),
        (("MODEL.TIMM.NAME", "test_vit", "MODEL.TIMM.OUT_INDICES", "[9]"), "out of range"),
        (("MODEL.TIMM.OUT_INDICES", "[0, 1, 2, 2]"), r"strides \[4, 8, 16, 16\]"),
        (("MODEL.TIMM.PRETRAINED_FILE", "w.pth"), "PRETRAINED_FILE is set but .*PRETRAINED is F"),
        (("MODEL.MASK_FORMER.SIZE_DIVISIBILITY", "14"), "SIZE_DIVISIBILITY 14 does not fit"),
    ],
)
def test_bad_settings_name_the_key(opts, message):
    cfg = _backbone_cfg("test_convnext", *opts)
    with pytest.raises(ConfigError, match=message):
        build_backbone(cfg)


def test_pretrained_file_loads_by_name_and_a_missing_one_is_named(tmp_path):
    source = timm.create_model("test_vit")
    weights = tmp_path / "vit.pth"
    torch.save(source.state_dict(), weights)
    opts = ("MODEL.TIMM.PRETRAINED", "True", "MODEL.TIMM.PRETRAINED_FILE", str(weights))
    backbone = build_backbone(_backbone_cfg("test_vit", *opts))
    assert torch.equal(backbone.trunk.blocks[3].attn.qkv.weight, source.blocks[3].attn.qkv.weight)
    missing = str(tmp_path / "missing.safetensors")
    with pytest.raises(ConfigError, match=r"MODEL.TIMM.PRETRAINED_FILE '.*missing.safetensors'"):
        build_backbone(_backbone_cfg("test_vit", *opts[:-1], missing))
    other = tmp_path / "other.pth"
    torch.save(timm.create_model("test_convnext").state_dict(), other)
    with pytest.raises(ConfigError, match="does not hold weights of timm model 'test_vit'"):
        build_backbone(_backbone_cfg("test_vit", *opts[:-1], str(other)))


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_build(path):
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    cfg.MODEL.TIMM.PRETRAINED = False  # the tests run without network
    assert cfg.MODEL.BACKBONE.NAME == "TimmBackbone" and cfg.MODEL.TIMM.NAME.count(".") == 1
    with torch.device("meta"):
        model = META_ARCH_REGISTRY.get("InstaFormer")(cfg)
    assert {k: s.stride for k, s in model.backbone.output_shape().items()} == STRIDES
    names = [n for n, _ in model.named_parameters()]
    assert any(n.startswith("backbone.trunk.") for n in names)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if "adapters" in path.name:  # the released recipe: order head and adapters only
        assert trainable and all(
            n.startswith("geometric_predictor.") or "adapter" in n for n in trainable
        )
        assert any("adapter" in n for n in trainable)
    elif "dinov2" in path.name:  # frozen DINOv2 trunk, the pyramid and the decoders train
        assert not any(n.startswith("backbone.trunk.") for n in trainable)
        assert any(n.startswith("backbone.pyramid.") for n in trainable)
        assert any(n.startswith("sem_seg_head.") for n in trainable)
    else:
        assert set(names) == trainable


# -- train_net on the synthetic twin ---------------------------------------------------------


def _args(output_dir: Path, *extra: str, resume: bool = False, eval_only: bool = False):
    argv = ["--config-file", TINY, *(["--resume"] if resume else [])]
    argv += ["--eval-only"] if eval_only else []
    argv += ["OUTPUT_DIR", str(output_dir), "SOLVER.IMS_PER_BATCH", "2"]
    argv += ["DATALOADER.NUM_WORKERS", "0", "SOLVER.WARMUP_ITERS", "2", *extra]
    return default_argument_parser().parse_args(argv)


def _main(args):
    return main(load_config(args), args)


@pytest.fixture
def _datasets(synthetic_datasets, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(synthetic_datasets))


@pytest.mark.slow
@pytest.mark.usefixtures("_datasets")
def test_train_infer_save_load_and_resume_through_train_net(tmp_path, monkeypatch):
    from huggingface_hub import constants

    run = tmp_path / "run"
    common = ("SOLVER.CHECKPOINT_PERIOD", "1", "SEED", "3")
    results = _main(_args(run, "SOLVER.MAX_ITER", "2", *common))
    # From here on every model is built for a checkpoint that gives all its weights: with
    # MODEL.TIMM.PRETRAINED True they must not be fetched (the hub is offline, its cache empty).
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    pretrained = ("MODEL.TIMM.PRETRAINED", "True")
    assert {"panoptic_seg", "occlusion_order", "depth_order"} <= set(results)
    checkpoint = torch.load(run / "model_final.pth", weights_only=True)
    state = checkpoint["model"]
    assert (
        "backbone.trunk.stem.0.weight" in state
        and "backbone.trunk.stages.3.blocks.0.gamma" in state
    )
    assert "TimmBackbone" in checkpoint["cfg"] and checkpoint["iteration"] == 1

    # load: --eval-only from the saved weights gives the same results
    weights = ("MODEL.WEIGHTS", str(run / "model_final.pth"))
    evaluated = _main(_args(tmp_path / "eval", *weights, *pretrained, eval_only=True))
    assert evaluated["panoptic_seg"]["PQ"] == pytest.approx(results["panoptic_seg"]["PQ"])
    assert evaluated["occlusion_order"] == pytest.approx(results["occlusion_order"], nan_ok=True)
    predictor = Predictor.from_config_file(TINY, run / "model_final.pth", opts=pretrained)
    assert predictor.random_weights == [] and predictor(np.zeros((48, 64, 3), np.uint8)) is not None

    # resume: the run goes on from the last checkpoint with its weights
    args = _args(run, "SOLVER.MAX_ITER", "3", *common, *pretrained, resume=True)
    cfg = load_config(args)
    setup(cfg, args)
    trainer = build_trainer(cfg, from_checkpoint=weights_from_checkpoint(cfg, args))
    trainer.train(resume=True)
    assert trainer.start_iter == 2 and trainer.iteration == 2
    resumed = torch.load(run / "model_final.pth", weights_only=True)
    assert resumed["iteration"] == 2
    changed = [
        k
        for k in state
        if k.startswith("backbone.") and not torch.equal(state[k], resumed["model"][k])
    ]
    assert changed  # the third step trained the loaded backbone further


def test_missing_pretrained_weights_fail_in_one_line_without_network(
    synthetic_datasets, tmp_path, capsys, monkeypatch
):
    from huggingface_hub import constants

    from instaformer.train import cli

    monkeypatch.setenv("DETECTRON2_DATASETS", str(synthetic_datasets))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # any request would raise
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache
    argv = [
        "--config-file",
        TINY,
        "OUTPUT_DIR",
        str(tmp_path / "out"),
        "MODEL.TIMM.PRETRAINED",
        "True",
    ]
    with pytest.raises(SystemExit) as info:
        cli(argv)
    assert info.value.code == 2
    # The pre-flight check builds the model before anything starts: the fetch is its one fault.
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == (
        "instaformer-train: error: the pre-flight check found 1 fault; nothing was started:"
    )
    assert lines[1].startswith(
        "  the model cannot be built from this config: cannot fetch the pretrained weights of "
        "timm model 'test_convnext' (MODEL.TIMM.PRETRAINED True) from the Hugging Face hub "
        "repository timm/test_convnext"
    )
    assert str(tmp_path / "hub") in lines[1] and "MODEL.TIMM.PRETRAINED_FILE" in lines[1]
    assert "--debug" in lines[2] and len(lines) == 3


@pytest.mark.slow
def test_unreachable_hub_fails_in_one_line_and_in_bounded_time(tmp_path):
    """A hub that answers nothing useful (a local server standing in for huggingface.co)."""
    script = (
        "from mask2former.modeling.backbone.timm_models import create_timm_model\n"
        "create_timm_model('test_vit', pretrained=True)\n"
    )
    with LocalServer({}) as server:
        env = dict(os.environ, HF_ENDPOINT=f"http://127.0.0.1:{server.port}")
        env.update(HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(REPO))
        env.pop("HF_HUB_OFFLINE", None)
        env.pop("HF_HUB_CACHE", None)
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
        )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("mask2former.utils.download.DownloadError: cannot fetch the pretrained")
    assert "'test_vit'" in last and str(tmp_path / "hf") in last


def test_hub_failure_is_a_download_error(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(DownloadError, match=r"^cannot fetch .*'test_resnet'[^\n]*$"):
        create_timm_model("test_resnet", pretrained=True)


def test_simple_feature_pyramid_levels():
    pyramid = SimpleFeaturePyramid(in_channels=64, out_channels=32)
    out = pyramid(torch.randn(1, 64, 5, 7))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (1, 32, 20, 28),
        "res3": (1, 32, 10, 14),
        "res4": (1, 32, 5, 7),
        "res5": (1, 32, 2, 3),
    }
