"""Config keys build the same modules as the reference does (docs/configs.md).

Tiny models with non-default heads, points, layers and widths on ResNet (ResNeXt groups, R101
depth) and Swin backbones. The expected state dict is written here from the reference's
constructors (facebookresearch/Mask2Former, SNU-VGILab/InstaOrder, detectron2): every name and
shape of ``backbone.*``, ``sem_seg_head.*`` and ``criterion.*`` must match it exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from instaformer.config import ConfigError, get_cfg
from instaformer.modeling.order.build import build_order_head
from mask2former.data.catalog import MetadataCatalog
from mask2former.modeling.meta_arch import MaskFormer
from mask2former.modeling.pixel_decoder.deform_attn import MSDeformAttn
from mask2former.modeling.registry import META_ARCH_REGISTRY

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "configs" / "instaorder" / "maskformer2_R50_bs16_50ep.yaml"
OD_CONFIG = ROOT / "configs/instaorder/occlusion_depth/all/occlusion_depth_config.yaml"
Shapes = dict[str, tuple[int, ...]]

# Non-default values of every shape-changing key of the head (defaults in brackets).
HEAD = {
    "MODEL.MASK_FORMER.NHEADS": 4,  # [8] decoder and pixel-decoder attention heads
    "MODEL.MASK_FORMER.DEC_LAYERS": 4,  # [10] predictions; 3 decoder layers
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD": 48,  # [2048]
    "MODEL.MASK_FORMER.HIDDEN_DIM": 40,  # [256]
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 7,  # [100]
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS": 50,  # [12544]
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 5,  # [133]
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": 64,  # [256] (GroupNorm(32, .) needs a multiple of 32)
    "MODEL.SEM_SEG_HEAD.MASK_DIM": 24,  # [256]
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS": 2,  # [6]
    "MODEL.MASK_FORMER.ADAPTER_DIM": 8,  # [64]
}
RESNEXT = {
    "MODEL.RESNETS.DEPTH": 50,
    "MODEL.RESNETS.STEM_OUT_CHANNELS": 8,  # [64]
    "MODEL.RESNETS.RES2_OUT_CHANNELS": 32,  # [256]
    "MODEL.RESNETS.NUM_GROUPS": 2,  # [1]
    "MODEL.RESNETS.WIDTH_PER_GROUP": 4,  # [64]
}
R101 = {**RESNEXT, "MODEL.RESNETS.DEPTH": 101, "MODEL.RESNETS.NUM_GROUPS": 1}
SWIN = {
    "MODEL.BACKBONE.NAME": "D2SwinTransformer",
    "MODEL.SWIN.EMBED_DIM": 16,  # [96]
    "MODEL.SWIN.DEPTHS": [1, 2, 1, 1],  # [2, 2, 6, 2]
    "MODEL.SWIN.NUM_HEADS": [1, 2, 2, 4],  # [3, 6, 12, 24]
    "MODEL.SWIN.WINDOW_SIZE": 4,  # [7]
    "MODEL.SWIN.MLP_RATIO": 2.0,  # [4.0]
    "MODEL.SWIN.PATCH_SIZE": 2,  # [4]
}
BLOCKS_PER_STAGE = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}  # detectron2 build_resnet_backbone


def _cfg(overrides: dict):
    cfg = get_cfg()
    cfg.merge_from_file(str(BASE))
    opts = ["MODEL.DEVICE", "cpu"]
    for key, value in overrides.items():
        opts += [key, str(value)]
    cfg.merge_from_list(opts)
    return cfg


def _norm(prefix: str, dim: int, frozen: bool = False) -> Shapes:
    keys = ("weight", "bias", "running_mean", "running_var") if frozen else ("weight", "bias")
    return {f"{prefix}.{k}": (dim,) for k in keys}


def _linear(prefix: str, out_dim: int, in_dim: int) -> Shapes:
    return {f"{prefix}.weight": (out_dim, in_dim), f"{prefix}.bias": (out_dim,)}


def _resnet(cfg) -> tuple[Shapes, dict[str, int]]:
    """detectron2 ResNet (BasicStem, BottleneckBlock, FrozenBN) and its output channels."""
    r = cfg.MODEL.RESNETS
    shapes: Shapes = {"backbone.stem.conv1.weight": (r.STEM_OUT_CHANNELS, 3, 7, 7)}
    shapes.update(_norm("backbone.stem.conv1.norm", r.STEM_OUT_CHANNELS, frozen=True))
    in_ch, out_ch = r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS
    bottleneck = r.NUM_GROUPS * r.WIDTH_PER_GROUP
    channels = {}
    for stage, blocks in zip(range(2, 6), BLOCKS_PER_STAGE[r.DEPTH], strict=True):
        for i in range(blocks):
            p = f"backbone.res{stage}.{i}"
            if in_ch != out_ch:
                shapes[f"{p}.shortcut.weight"] = (out_ch, in_ch, 1, 1)
                shapes.update(_norm(f"{p}.shortcut.norm", out_ch, frozen=True))
            convs = {
                "conv1": (bottleneck, in_ch, 1, 1),
                "conv2": (bottleneck, bottleneck // r.NUM_GROUPS, 3, 3),
                "conv3": (out_ch, bottleneck, 1, 1),
            }
            for name, shape in convs.items():
                shapes[f"{p}.{name}.weight"] = shape
                shapes.update(_norm(f"{p}.{name}.norm", shape[0], frozen=True))
            in_ch = out_ch
        channels[f"res{stage}"] = out_ch
        out_ch *= 2
        bottleneck *= 2
    return shapes, channels


def _swin(cfg) -> tuple[Shapes, dict[str, int]]:
    """Swin Transformer of the reference's backbone/swin.py (all four stages output)."""
    s = cfg.MODEL.SWIN
    e, w = s.EMBED_DIM, s.WINDOW_SIZE
    shapes: Shapes = {"backbone.patch_embed.proj.weight": (e, 3, s.PATCH_SIZE, s.PATCH_SIZE)}
    shapes["backbone.patch_embed.proj.bias"] = (e,)
    shapes.update(_norm("backbone.patch_embed.norm", e))
    channels = {}
    for i, (depth, heads) in enumerate(zip(s.DEPTHS, s.NUM_HEADS, strict=True)):
        d = e * 2**i
        hidden = int(d * s.MLP_RATIO)
        for j in range(depth):
            p = f"backbone.layers.{i}.blocks.{j}"
            shapes.update(_norm(f"{p}.norm1", d))
            shapes[f"{p}.attn.relative_position_bias_table"] = ((2 * w - 1) ** 2, heads)
            shapes[f"{p}.attn.relative_position_index"] = (w * w, w * w)
            shapes.update(_linear(f"{p}.attn.qkv", 3 * d, d))
            shapes.update(_linear(f"{p}.attn.proj", d, d))
            shapes.update(_norm(f"{p}.norm2", d))
            shapes.update(_linear(f"{p}.mlp.fc1", hidden, d))
            shapes.update(_linear(f"{p}.mlp.fc2", d, hidden))
        if i < 3:
            shapes[f"backbone.layers.{i}.downsample.reduction.weight"] = (2 * d, 4 * d)
            shapes.update(_norm(f"backbone.layers.{i}.downsample.norm", 4 * d))
        shapes.update(_norm(f"backbone.norm{i}", d))
        channels[f"res{i + 2}"] = d
    return shapes, channels


def _pixel_decoder(cfg, channels: dict[str, int]) -> Shapes:
    """Mask2Former MSDeformAttnPixelDecoder + InstaFormer encoder adapters.

    Reference from_config: heads = MASK_FORMER.NHEADS, FFN = 1024, points = 4 (both fixed).
    """
    head, mf = cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.MASK_FORMER
    c, a = head.CONVS_DIM, mf.ADAPTER_DIM
    enc = [
        f
        for f in ("res2", "res3", "res4", "res5")
        if f in head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES
    ]
    levels, heads, points, ffn = len(enc), mf.NHEADS, 4, 1024
    p = "sem_seg_head.pixel_decoder"
    shapes: Shapes = {}
    for lvl, name in enumerate(enc[::-1]):
        shapes[f"{p}.input_proj.{lvl}.0.weight"] = (c, channels[name], 1, 1)
        shapes[f"{p}.input_proj.{lvl}.0.bias"] = (c,)
        shapes.update(_norm(f"{p}.input_proj.{lvl}.1", c))
    shapes[f"{p}.transformer.level_embed"] = (levels, c)
    for i in range(head.TRANSFORMER_ENC_LAYERS):
        q = f"{p}.transformer.encoder.layers.{i}"
        shapes.update(_linear(f"{q}.self_attn.sampling_offsets", heads * levels * points * 2, c))
        shapes.update(_linear(f"{q}.self_attn.attention_weights", heads * levels * points, c))
        shapes.update(_linear(f"{q}.self_attn.value_proj", c, c))
        shapes.update(_linear(f"{q}.self_attn.output_proj", c, c))
        shapes.update(_norm(f"{q}.norm1", c))
        shapes.update(_linear(f"{q}.linear1", ffn, c))
        shapes.update(_linear(f"{q}.linear2", c, ffn))
        shapes.update(_norm(f"{q}.norm2", c))
        shapes.update(_linear(f"{q}.adapter.0", a, c))
        shapes.update(_linear(f"{q}.adapter.2", c, a))
    shapes[f"{p}.mask_features.weight"] = (head.MASK_DIM, c, 1, 1)
    shapes[f"{p}.mask_features.bias"] = (head.MASK_DIM,)
    # FPN levels between the finest encoder stride (8) and COMMON_STRIDE; GN convs, no bias
    num_fpn = {4: 1, 8: 0}[head.COMMON_STRIDE]
    for k, name in enumerate(["res2", "res3", "res4", "res5"][:num_fpn], start=1):
        shapes[f"{p}.adapter_{k}.weight"] = (c, channels[name], 1, 1)
        shapes.update(_norm(f"{p}.adapter_{k}.norm", c))
        shapes[f"{p}.layer_{k}.weight"] = (c, c, 3, 3)
        shapes.update(_norm(f"{p}.layer_{k}.norm", c))
    return shapes


def _transformer_decoder(cfg) -> Shapes:
    """MultiScaleMaskedTransformerDecoder (+ InstaFormer decoder adapters): DEC_LAYERS - 1
    layers; 1x1 input projections when CONVS_DIM != HIDDEN_DIM or ENFORCE_INPUT_PROJ."""
    mf, head = cfg.MODEL.MASK_FORMER, cfg.MODEL.SEM_SEG_HEAD
    d, f, a = mf.HIDDEN_DIM, mf.DIM_FEEDFORWARD, mf.ADAPTER_DIM
    p = "sem_seg_head.predictor"
    shapes: Shapes = {}
    for i in range(mf.DEC_LAYERS - 1):
        for layer, attn in (("self_attention", "self_attn"), ("cross_attention", "multihead_attn")):
            q = f"{p}.transformer_{layer}_layers.{i}"
            shapes[f"{q}.{attn}.in_proj_weight"] = (3 * d, d)
            shapes[f"{q}.{attn}.in_proj_bias"] = (3 * d,)
            shapes.update(_linear(f"{q}.{attn}.out_proj", d, d))
            shapes.update(_norm(f"{q}.norm", d))
        q = f"{p}.transformer_ffn_layers.{i}"
        shapes.update(_linear(f"{q}.linear1", f, d))
        shapes.update(_linear(f"{q}.linear2", d, f))
        shapes.update(_norm(f"{q}.norm", d))
        shapes.update(_linear(f"{p}.transformer_adapter_layers.{i}.layers.0", a, d))
        shapes.update(_linear(f"{p}.transformer_adapter_layers.{i}.layers.1", d, a))
    shapes.update(_norm(f"{p}.decoder_norm", d))
    shapes[f"{p}.query_feat.weight"] = (mf.NUM_OBJECT_QUERIES, d)
    shapes[f"{p}.query_embed.weight"] = (mf.NUM_OBJECT_QUERIES, d)
    shapes[f"{p}.level_embed.weight"] = (3, d)
    if head.CONVS_DIM != d or mf.ENFORCE_INPUT_PROJ:
        for lvl in range(3):
            shapes[f"{p}.input_proj.{lvl}.weight"] = (d, head.CONVS_DIM, 1, 1)
            shapes[f"{p}.input_proj.{lvl}.bias"] = (d,)
    shapes.update(_linear(f"{p}.class_embed", head.NUM_CLASSES + 1, d))
    shapes.update(_linear(f"{p}.mask_embed.layers.0", d, d))
    shapes.update(_linear(f"{p}.mask_embed.layers.1", d, d))
    shapes.update(_linear(f"{p}.mask_embed.layers.2", head.MASK_DIM, d))
    return shapes


def _expected(cfg) -> Shapes:
    if cfg.MODEL.BACKBONE.NAME == "D2SwinTransformer":
        shapes, channels = _swin(cfg)
    else:
        shapes, channels = _resnet(cfg)
    shapes.update(_pixel_decoder(cfg, channels))
    shapes.update(_transformer_decoder(cfg))
    shapes["criterion.empty_weight"] = (cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES + 1,)
    return shapes


def _build(cfg) -> MaskFormer:
    torch.manual_seed(0)
    return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)


def _assert_state_dict(model: nn.Module, expected: Shapes) -> None:
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(ours))
    extra = sorted(set(ours) - set(expected))
    assert not missing and not extra, f"missing {missing[:5]}, unexpected {extra[:5]}"
    wrong = {k: (ours[k], expected[k]) for k in expected if ours[k] != expected[k]}
    assert not wrong, f"shape (ours, reference) differs: {dict(list(wrong.items())[:5])}"


@pytest.mark.parametrize(
    "backbone, stride",
    [(RESNEXT, 4), (R101, 8), (SWIN, 4), (SWIN, 8)],
    ids=["resnext50-stride4", "r101-stride8", "swin-stride4", "swin-stride8"],
)
def test_state_dict_shapes_follow_reference_formulas(backbone: dict, stride: int) -> None:
    cfg = _cfg({**HEAD, **backbone, "MODEL.SEM_SEG_HEAD.COMMON_STRIDE": stride})
    model = _build(cfg)
    _assert_state_dict(model, _expected(cfg))
    # Settings that shape no parameter: attention heads, sampled points.
    attns = [m for m in model.modules() if isinstance(m, MSDeformAttn)]
    assert len(attns) == 2 and all(m.n_heads == 4 and m.n_points == 4 for m in attns)
    mhas = [
        m for m in model.sem_seg_head.predictor.modules() if isinstance(m, nn.MultiheadAttention)
    ]
    assert len(mhas) == 2 * 3 and all(m.num_heads == 4 for m in mhas)
    assert model.criterion.num_points == 50 and model.criterion.matcher.num_points == 50
    # deep supervision: one loss set per earlier prediction (DEC_LAYERS - 1)
    assert sorted(k for k in model.criterion.weight_dict if k.startswith("loss_ce")) == [
        "loss_ce", "loss_ce_0", "loss_ce_1", "loss_ce_2"
    ]  # fmt: skip
    model.eval()
    with torch.no_grad():
        (out,) = model([{"image": torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)}])
    assert out["sem_seg"].shape == (5, 64, 96)


def test_pixel_decoder_heads_come_from_mask_former_nheads() -> None:
    # Mask2Former's pixel decoder reads MODEL.MASK_FORMER.NHEADS: a reference checkpoint with
    # NHEADS 4 has sampling_offsets of 4 heads x 3 levels x 4 points x 2 rows.
    cfg = _cfg({**HEAD, **RESNEXT})
    offsets = _build(cfg).state_dict()[
        "sem_seg_head.pixel_decoder.transformer.encoder.layers.0.self_attn.sampling_offsets.weight"
    ]
    assert tuple(offsets.shape) == (4 * 3 * 4 * 2, 64)


@pytest.mark.parametrize(
    "key, default, other",
    [
        ("MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS", 8, 4),
        ("MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS", 4, 8),
    ],
)
def test_unread_deformable_encoder_keys_are_legacy(
    tmp_path: Path, key: str, default: int, other: int
) -> None:
    # Released files set these keys to the default: they load, and change nothing.
    name = key.rsplit(".", 1)[1]
    yaml = tmp_path / "legacy.yaml"
    yaml.write_text(f"_BASE_: {BASE}\nMODEL:\n  SEM_SEG_HEAD:\n    {name}: {default}\n")
    cfg = get_cfg()
    cfg.merge_from_file(str(yaml))
    assert name not in cfg.MODEL.SEM_SEG_HEAD
    cfg.merge_from_list([key, str(default)])
    # Any other value would silently build something else than the user asked: refused.
    with pytest.raises(ConfigError, match=name):
        cfg.merge_from_list([key, str(other)])
    yaml.write_text(f"_BASE_: {BASE}\nMODEL:\n  SEM_SEG_HEAD:\n    {name}: {other}\n")
    with pytest.raises(ConfigError, match="legacy.yaml"):
        get_cfg().merge_from_file(str(yaml))


def test_thing_classes_come_from_training_dataset_metadata() -> None:
    # The reference reads the thing classes of panoptic/instance inference from the metadata
    # of DATASETS.TRAIN[0]; without such metadata, every class of a non-COCO head is a thing.
    name = "config_shapes_two_things_of_five"
    MetadataCatalog.get(name).set(thing_dataset_id_to_contiguous_id={11: 0, 17: 2})
    try:
        cfg = _cfg({**HEAD, **RESNEXT, "DATASETS.TRAIN": f"('{name}',)"})
        assert _build(cfg).thing_ids == {0, 2}
    finally:
        MetadataCatalog.remove(name)
    cfg = _cfg({**HEAD, **RESNEXT, "DATASETS.TRAIN": "('config_shapes_unregistered',)"})
    assert _build(cfg).thing_ids == set(range(5))
    assert "config_shapes_unregistered" not in MetadataCatalog.list()  # looking up adds nothing


def _order_mlp(prefix: str, dims: list[int]) -> Shapes:
    shapes: Shapes = {}
    for k, (n_in, n_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        shapes.update(_linear(f"{prefix}.layers.{k}", n_out, n_in))
    return shapes


def _order_transformer(prefix: str, d: int, layers: int, mlp_layers: int, expansion: int) -> Shapes:
    shapes: Shapes = {}
    for i in range(layers):
        q = f"{prefix}.layers.{i}"
        shapes.update(_norm(f"{q}.norm1", d))
        shapes[f"{q}.attn.in_proj_weight"] = (3 * d, d)
        shapes[f"{q}.attn.in_proj_bias"] = (3 * d,)
        shapes.update(_linear(f"{q}.attn.out_proj", d, d))
        shapes.update(_norm(f"{q}.norm2", d))
        hidden = [d * expansion] * (mlp_layers - 1)
        shapes.update(_order_mlp(f"{q}.mlp", [d, *hidden, d]))
    return shapes


def _geometric_transformer(cfg) -> Shapes:
    """InstaOrder GeometricTransformer (method "stack", attention before pooling): input width
    256 (hard-coded there; MASK_DIM here, 256 in every release), one 256-wide feature layer."""
    gp = cfg.MODEL.GEOMETRIC_PREDICTOR
    d, m, e, width = gp.D_MODEL, gp.MLP_NUM_LAYERS, gp.MLP_EXPANSION, 256
    shapes = _order_transformer("features_transformer", width, 1, m, e)
    if d != width:
        shapes.update(_linear("proj_feats_to_input_size", d, width))
        shapes.update(_linear("proj_embed_to_input_size", d, width))
    shapes.update(_order_transformer("concat_transformer", d, gp.NUM_LAYERS, m, e))
    hidden = [d * e] * (m - 1)
    for t, classes in enumerate((2, 3)):  # occlusion, depth
        for k in range(2):
            shapes.update(_order_mlp(f"projs.{t}.{k}", [d, *hidden, d]))
        shapes.update(_order_mlp(f"out_projs.{t}", [1, *[d] * (m - 1), classes]))
    return shapes


@pytest.mark.parametrize("d_model", [32, 256], ids=["projected", "unprojected"])
def test_order_head_shapes_follow_reference_formulas(d_model: int) -> None:
    cfg = get_cfg()
    cfg.merge_from_file(
        str(ROOT / "configs/instaorder/occlusion_depth/all/occlusion_depth_config.yaml")
    )
    gp = "MODEL.GEOMETRIC_PREDICTOR."
    cfg.merge_from_list(
        [gp + "D_MODEL", str(d_model), gp + "NUM_HEADS", "2", gp + "NUM_LAYERS", "3"]
        + [gp + "MLP_NUM_LAYERS", "3", gp + "MLP_EXPANSION", "2"]
    )
    head = build_order_head(cfg)
    _assert_state_dict(head, _geometric_transformer(cfg))
    attns = [m for m in head.modules() if isinstance(m, nn.MultiheadAttention)]
    assert len(attns) == 1 + 3 and all(m.num_heads == 2 for m in attns)
