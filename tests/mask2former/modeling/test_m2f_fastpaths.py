"""Fast paths of the Mask2Former forward give the values of their plain formulations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mask2former.modeling import postprocessing
from mask2former.modeling.ops import ms_deform_attn
from mask2former.modeling.ops.reference import ms_deform_attn_reference, random_inputs
from mask2former.modeling.transformer_decoder.mask2former_transformer_decoder import (
    downsample_bilinear,
)


@pytest.mark.parametrize("size", [(32, 24), (16, 12), (8, 6), (64, 48), (20, 24), (32, 48)])
def test_downsample_bilinear_matches_interpolate(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 64, 48)
    expected = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    out = downsample_bilinear(x, size)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_ms_deform_attn_takes_python_shapes() -> None:
    levels = [(6, 5), (3, 3), (1, 2)]
    value, shapes, starts, locations, weights = random_inputs(
        batch=2, spatial_shapes=levels, num_queries=7, num_heads=2, head_dim=4, num_points=3,
        dtype=torch.float64, margin=0.2,
    )  # fmt: skip
    expected = ms_deform_attn_reference(value, shapes, starts, locations, weights)
    out = ms_deform_attn(value, levels, starts, locations, weights)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)
    with pytest.raises(ValueError, match="cover"):
        ms_deform_attn(value, [(6, 5), (3, 3), (1, 1)], starts, locations, weights)
    with pytest.raises(ValueError, match="pairs of ints"):
        ms_deform_attn(value, [(6, 5, 1), (3, 3), (1, 2)], starts, locations, weights)


@pytest.mark.parametrize("chunk", [1 << 20, 50])  # 50: many row / query chunks
def test_chunked_postprocessing_matches_plain_formulas(chunk: int, monkeypatch) -> None:
    monkeypatch.setattr(postprocessing, "_CHUNK_ELEMENTS", chunk)
    torch.manual_seed(0)
    q, k, h, w = 6, 5, 13, 11
    mask_cls, mask_pred = torch.randn(q, k + 1) * 3, torch.randn(q, h, w) * 4
    probs = F.softmax(mask_cls, dim=-1)
    expected_sem = torch.einsum("qc,qhw->chw", probs[:, :-1], mask_pred.sigmoid())
    sem = postprocessing.semantic_inference(mask_cls, mask_pred)
    torch.testing.assert_close(sem, expected_sem, atol=1e-6, rtol=1e-6)

    def panoptic() -> tuple:
        return postprocessing.panoptic_inference(
            mask_cls, mask_pred, num_classes=k, thing_ids={0, 1, 2},
            object_mask_threshold=0.0, overlap_threshold=0.0,
        )  # fmt: skip

    seg, segments, keep = panoptic()
    monkeypatch.setattr(postprocessing, "_CHUNK_ELEMENTS", 1 << 30)  # one chunk: plain argmax
    plain_seg, plain_segments, plain_keep = panoptic()
    assert len(segments) > 1
    assert torch.equal(seg, plain_seg) and segments == plain_segments
    assert torch.equal(keep, plain_keep)
    for segment in segments:  # the score is the query's top class probability
        top = probs[segment["query_index"]].max()
        assert segment["score"] == pytest.approx(float(top)) and 0 < segment["score"] <= 1
        assert int(probs[segment["query_index"]].argmax()) == segment["category_id"]

    positive = mask_pred > 0
    expected_scores = (mask_pred.sigmoid() * positive).flatten(1).sum(1) / (
        positive.flatten(1).sum(1) + 1e-6
    )
    scores = postprocessing.mask_scores(mask_pred, positive)
    torch.testing.assert_close(scores, expected_scores, atol=1e-6, rtol=1e-6)


def test_sem_seg_postprocess_is_a_crop_when_no_resize_is_needed() -> None:
    x = torch.randn(3, 10, 12)
    out = postprocessing.sem_seg_postprocess(x, (8, 9), 8, 9)
    assert out.data_ptr() == x.data_ptr()  # a view, no copy
    torch.testing.assert_close(out, x[:, :8, :9], atol=0, rtol=0)
    torch.testing.assert_close(
        postprocessing.sem_seg_postprocess(x, (8, 9), 8, 9),
        F.interpolate(x[None, :, :8, :9], size=(8, 9), mode="bilinear", align_corners=False)[0],
        atol=1e-6, rtol=0,
    )  # fmt: skip
    assert postprocessing.sem_seg_postprocess(x, (8, 9), 16, 18).shape == (3, 16, 18)
