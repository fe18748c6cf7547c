"""GeometricTransformer: manifests, parity with the reference, fast == released attention,
equivariance, small n, builder validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from instaformer.config import get_cfg
from instaformer.modeling.order import GeometricTransformer, build_order_head, feature_attention
from instaformer.modeling.order.feature_attention import (
    attention_pool_dense,
    attention_pool_sparse,
)
from instaformer.modeling.order.layers import TransformerLayer

REPO = Path(__file__).resolve().parents[1]
PREFIX = "geometric_predictor."


def _manifest_head(path) -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in path.read_text().splitlines()[1:]:
        key, shape, _ = line.split("\t")
        if key.startswith(PREFIX):
            dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
            rows.append((key[len(PREFIX) :], dims))
    return rows


def _task_manifests(reference_dir):
    paths = sorted((reference_dir / "manifests").glob("configs__instaorder__*__*__*.tsv"))
    assert len(paths) == 36  # 3 tasks x (all, pairwise) x (R50 + 5 Swin)
    return paths


def test_manifest_keys_and_shapes_of_every_order_head(reference_dir):
    for path in _task_manifests(reference_dir):
        config = REPO / (path.stem.replace("__", "/") + ".yaml")
        cfg = get_cfg()
        cfg.merge_from_file(str(config))
        with torch.device("meta"):
            head = build_order_head(cfg)
        ours = [(k, tuple(v.shape)) for k, v in head.state_dict().items()]
        assert ours == _manifest_head(path), path.name


def _fixture(reference_dir, name):
    root = reference_dir / "parity" / name
    state = torch.load(root / "model_state_dict.pth")
    outputs = torch.load(root / "outputs.pt")
    feats = torch.load(root / "intermediates.pt")["img0.pixel_decoder.mask_features"][0]
    head_state = {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)}
    return head_state, outputs, feats


@pytest.mark.parametrize("name", ["swin-tiny-od-small", "r50-od-small"])
def test_parity_with_reference_fixture(reference_dir, name):
    head_state, outputs, feats = _fixture(reference_dir, name)
    # meta.json overrides D_MODEL 64, NUM_LAYERS 2; MASK_DIM 256, 8 heads, MLP 2x4 are defaults.
    head = GeometricTransformer(tasks=("occlusion", "depth"), d_model=64, num_layers=2).eval()
    head.load_state_dict(head_state, strict=True)
    with torch.no_grad():
        out = head(outputs["img0.geom_in.mask_embed"], outputs["img0.geom_in.binary_masks"], feats)
    for task in ("occlusion", "depth"):
        assert len(out[task]) == 2
        for layer, logits in enumerate(out[task]):
            ref = outputs[f"img0.geom_out.pred_{task}.layer{layer}"]
            torch.testing.assert_close(logits, ref, atol=1e-4, rtol=0)
        final = out[task][-1].argmax(-1)
        final.fill_diagonal_(-1)
        assert torch.equal(final, outputs[f"img0.{task}"])


def _random_case(n, c=32, h=9, w=11, overlap=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    if overlap:
        masks = (torch.rand(n, h, w, generator=g) < 0.4).to(torch.uint8)
    else:
        label = torch.randint(0, n + 2, (h, w), generator=g)
        masks = (label[None] == torch.arange(n)[:, None, None]).to(torch.uint8)
    feats = torch.randn(c, h, w, generator=g)
    feats[torch.rand(c, h, w, generator=g) < 0.1] = 0.0  # isolated exact zeros in masks
    feats[:, 0, :3] = 0.0  # whole pixel vectors equal to zero
    return masks, feats


@pytest.mark.parametrize("chunk", [4096, 7])  # 7: many pixel chunks
@pytest.mark.parametrize("overlap", [True, False])
def test_fast_attention_equals_released_formulation(overlap, chunk, monkeypatch):
    monkeypatch.setattr(feature_attention, "_PIXEL_CHUNK", chunk)
    layer = TransformerLayer(dim=32, num_heads=4)
    with torch.no_grad():  # non-trivial LayerNorm affine so that LN(0) matters
        layer.norm1.bias.normal_()
        layer.norm1.weight.normal_()
    for n in (1, 2, 5, 9):
        masks, feats = _random_case(n, overlap=overlap, seed=n)
        masks[0] = 1  # one instance covering the whole map
        if n > 2:
            masks[1] = 0  # one empty mask
        f1 = feats.clone().requires_grad_(True)
        f2 = feats.clone().requires_grad_(True)
        dense = attention_pool_dense(layer, masks, f1)
        fast = attention_pool_sparse(layer, masks, f2)
        torch.testing.assert_close(fast, dense, atol=1e-5, rtol=1e-5)
        weights = torch.randn_like(dense)
        (dense * weights).sum().backward()
        (fast * weights).sum().backward()
        torch.testing.assert_close(f2.grad, f1.grad, atol=1e-5, rtol=1e-4)


def test_fast_pooling_without_attention_equals_max_of_gated_features():
    masks, feats = _random_case(4, overlap=True)
    torch.testing.assert_close(
        attention_pool_sparse(None, masks, feats), attention_pool_dense(None, masks, feats)
    )


def test_non_binary_masks_are_refused():
    layer = TransformerLayer(dim=32, num_heads=4)
    masks, feats = _random_case(3)
    with pytest.raises(ValueError, match="binary"):
        attention_pool_sparse(layer, masks * 2, feats)


def _small_head(**kwargs):
    return GeometricTransformer(
        tasks=("occlusion", "depth"), mask_dim=32, d_model=16, num_heads=4, num_layers=3, **kwargs
    ).eval()


def test_head_outputs_and_permutation_equivariance():
    head = _small_head()
    n = 6
    masks, feats = _random_case(n, overlap=False)
    embed = torch.randn(n, 32)
    perm = torch.randperm(n)
    with torch.no_grad():
        out = head(embed, masks, feats)
        out_perm = head(embed[perm], masks[perm], feats)
    for task, k in (("occlusion", 2), ("depth", 3)):
        assert len(out[task]) == 3
        for a, b in zip(out[task], out_perm[task], strict=True):
            assert a.shape == (n, n, k)
            torch.testing.assert_close(b, a[perm][:, perm], atol=1e-5, rtol=1e-5)


def test_dense_and_fast_heads_agree_with_gradients():
    fast = _small_head()
    dense = _small_head(dense_feature_attention=True)
    dense.load_state_dict(fast.state_dict())
    masks, feats = _random_case(5, overlap=True)
    embed = torch.randn(5, 32)
    outs = []
    for head in (fast, dense):
        out = head(embed, masks, feats)
        loss = sum((x**2).sum() for layers in out.values() for x in layers)
        loss.backward()
        outs.append((out, {k: p.grad.clone() for k, p in head.named_parameters()}))
    for task in ("occlusion", "depth"):
        for a, b in zip(outs[0][0][task], outs[1][0][task], strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for key, grad in outs[0][1].items():
        assert torch.isfinite(grad).all(), key
        ref = outs[1][1][key]
        scale = ref.abs().max().item()  # float32 summation order differs between formulations
        torch.testing.assert_close(grad, ref, atol=1e-4 * scale + 1e-6, rtol=1e-3)


@pytest.mark.parametrize("n", [0, 1, 2])
def test_zero_one_two_instances(n):
    head = _small_head()
    masks, feats = _random_case(max(n, 1))
    masks = masks[:n]
    out = head(torch.randn(n, 32), masks, feats)
    assert out["occlusion"][-1].shape == (n, n, 2)
    assert out["depth"][-1].shape == (n, n, 3)
    assert all(torch.isfinite(x).all() for x in out["depth"])


def test_chaining_flag_only_matters_for_the_second_task():
    chained = _small_head()
    independent = _small_head(chain_task_mlps=False)
    independent.load_state_dict(chained.state_dict())
    masks, feats = _random_case(4)
    embed = torch.randn(4, 32)
    with torch.no_grad():
        a, b = chained(embed, masks, feats), independent(embed, masks, feats)
    torch.testing.assert_close(a["occlusion"][-1], b["occlusion"][-1])
    assert not torch.allclose(a["depth"][-1], b["depth"][-1])


def test_transpose_queries_transposes_the_score_matrix():
    head = GeometricTransformer(tasks=("depth",), mask_dim=32, d_model=16, num_heads=4).eval()
    other = GeometricTransformer(
        tasks=("depth",), mask_dim=32, d_model=16, num_heads=4, transpose_queries=True
    ).eval()
    other.load_state_dict(head.state_dict())
    masks, feats = _random_case(4)
    embed = torch.randn(4, 32)
    with torch.no_grad():
        a, b = head(embed, masks, feats)["depth"][-1], other(embed, masks, feats)["depth"][-1]
    torch.testing.assert_close(b, a.transpose(0, 1))


def _cfg(**overrides):
    cfg = get_cfg()
    cfg.MODEL.GEOMETRIC_PREDICTOR.NAME = "GeometricTransformer"
    cfg.MODEL.GEOMETRIC_PREDICTOR.TASK = "od"
    cfg.MODEL.GEOMETRIC_PREDICTOR.D_MODEL = 16
    cfg.MODEL.GEOMETRIC_PREDICTOR.NUM_LAYERS = 1
    for key, value in overrides.items():
        setattr(cfg.MODEL.GEOMETRIC_PREDICTOR, key, value)
    return cfg


def test_builder_none_tasks_and_unsupported_values():
    cfg = get_cfg()
    assert build_order_head(cfg) is None
    head = build_order_head(_cfg())
    assert head.tasks == ("occlusion", "depth")
    assert head.features_transformer.layers[0].norm1.weight.shape == (256,)  # MASK_DIM
    with pytest.raises(ValueError, match="TASK"):
        build_order_head(_cfg(TASK=""))
