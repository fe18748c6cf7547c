"""Predictor, OrderResult and the order pictures.

The contract tests use a small stand-in model that paints a known scene (things drawn back to
front, so occlusion and depth are known); the tiny-config tests use the real model.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from instaformer.apps.visualization import (
    anchor_point,
    draw_depth,
    draw_occlusion,
    draw_panoptic,
    draw_video_frame,
)
from instaformer.config import setup_cfg
from instaformer.modeling import build_model
from instaformer.predictor import Predictor, load_image
from instaformer.structures import depth_ranking, result_from_output

REPO = Path(__file__).resolve().parents[1]
OD_CONFIG = REPO / "configs" / "synthetic" / "instaformer_od_tiny.yaml"
"""Tiny InstaFormer^od: narrow R50 Mask2Former plus a small GeometricTransformer order head."""
LOW_THRESHOLDS = [
    "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.0",
    "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", "0.0",
]  # fmt: skip
"""Overrides under which a random-init model yields segments."""


def tiny_cfg():
    """Config of the tiny od model (random init, low thresholds, CPU)."""
    return setup_cfg(str(OD_CONFIG), LOW_THRESHOLDS + ["MODEL.DEVICE", "cpu"])


def make_scene(h: int, w: int, n: int = 4):
    """RGB image, panoptic map and segments_info of two stuff bands and n things painted back
    to front (thing t is closer than every earlier thing)."""
    image = np.zeros((h, w, 3), np.uint8)
    panoptic = np.zeros((h, w), np.int32)
    image[: h // 2], panoptic[: h // 2] = (135, 190, 235), 1
    image[h // 2 :], panoptic[h // 2 :] = (90, 160, 70), 2
    infos = [
        {"id": 1, "category_id": 3, "isthing": False, "score": 1.0},
        {"id": 2, "category_id": 4, "isthing": False, "score": 1.0},
    ]
    for t in range(n):
        cy, cx = int(h * (0.3 + 0.12 * t)), int(w * (0.25 + 0.15 * t))
        mask = np.zeros((h, w), np.uint8)
        cv2.rectangle(mask, (cx - w // 8, cy - h // 8), (cx + w // 8, cy + h // 8), 1, -1)
        image[mask.astype(bool)] = (40 + 50 * t, 200 - 40 * t, 120)
        panoptic[mask.astype(bool)] = 10 + t
        infos.append(
            {"id": 10 + t, "category_id": t % 3, "isthing": True, "score": 0.9, "query_index": t}
        )
    return image, panoptic, infos


class SceneModel(nn.Module):
    """Stand-in following the blind-inference output contract for a fixed scene."""

    output_tasks = ("occlusion", "depth")

    def __init__(self, panoptic: np.ndarray, infos: list[dict], shuffle_rows: bool = False):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.panoptic, self.infos, self.shuffle_rows = panoptic, infos, shuffle_rows

    def forward(self, batched_inputs, results=None):
        outputs = []
        for x in batched_inputs:
            assert x["image"].dtype == torch.uint8 and x["image"].shape[0] == 3
            size = (x["width"], x["height"])
            seg = cv2.resize(self.panoptic, size, interpolation=cv2.INTER_NEAREST)
            things = [i for i in self.infos if i["isthing"]]
            order = list(range(len(things)))[:: -1 if self.shuffle_rows else 1]
            depth_rank = [things[i]["query_index"] for i in order]  # painting order
            k = len(order)
            occ_p, depth_p = torch.zeros(k, k), torch.zeros(k, k, 3)
            for a in range(k):
                for b in range(k):
                    if a != b:
                        closer = depth_rank[a] > depth_rank[b]
                        occ_p[a, b] = (
                            0.9 if closer and abs(depth_rank[a] - depth_rank[b]) == 1 else 0.1
                        )
                        depth_p[a, b] = torch.tensor([0.1, 0.8, 0.1] if closer else [0.7, 0.2, 0.1])
            occ = (occ_p > 0.5).long().fill_diagonal_(-1)
            depth = depth_p.argmax(-1).fill_diagonal_(-1)
            outputs.append(
                {
                    "panoptic_seg": (torch.from_numpy(seg), self.infos),
                    "order_segment_ids": torch.tensor([things[i]["id"] for i in order]),
                    "occlusion": occ,
                    "occlusion_prob": occ_p,
                    "depth": depth,
                    "depth_prob": depth_p,
                }
            )
        return outputs


def scene_predictor(shuffle_rows: bool = False, size=(96, 128)):
    image, panoptic, infos = make_scene(*size)
    return Predictor(tiny_cfg(), model=SceneModel(panoptic, infos, shuffle_rows)), image


@pytest.mark.parametrize("shuffle_rows", [False, True])
def test_result_rows_follow_order_segment_ids(shuffle_rows):
    predictor, image = scene_predictor(shuffle_rows)
    result = predictor(image)
    k = len(result.segments)
    assert k == 4 and len(result.stuff_segments) == 2
    assert all(s.isthing for s in result.segments)
    ids = [s.id for s in result.segments]
    assert ids == ([13, 12, 11, 10] if shuffle_rows else [10, 11, 12, 13])
    for name in ("occlusion", "depth"):
        matrix = getattr(result, name)
        assert matrix.shape == (k, k) and matrix.dtype == np.int64
        assert (np.diag(matrix) == -1).all()
    assert result.occlusion_prob.shape == (k, k) and result.depth_prob.shape == (k, k, 3)
    # the painter's order: the thing with id 13 is closest, id 10 farthest
    assert [ids[i] for i in result.depth_ranking] == [13, 12, 11, 10]
    assert sorted(result.depth_rank) == list(range(k))
    for seg in result.segments:
        assert seg.mask.shape == image.shape[:2] and seg.mask.dtype == bool
        assert seg.area == seg.mask.sum() == (result.panoptic_seg == seg.id).sum()
        x, y, w, h = seg.bbox
        assert seg.mask[y : y + h, x : x + w].sum() == seg.area


def test_to_json_round_trips_and_rle_decodes():
    from pycocotools import mask as mask_util

    predictor, image = scene_predictor()
    result = predictor(image)
    loaded = json.loads(result.to_json())
    assert loaded == json.loads(json.dumps(result.to_dict()))
    assert loaded["occlusion"] == result.occlusion.tolist()
    assert np.allclose(np.array(loaded["depth_prob"]), result.depth_prob)
    assert loaded["depth_ranking"] == result.depth_ranking
    assert "mask" not in loaded["segments"][0]
    with_masks = json.loads(result.to_json(include_masks=True))
    rle = dict(with_masks["segments"][1]["mask"])
    rle["counts"] = rle["counts"].encode("ascii")
    assert (mask_util.decode(rle).astype(bool) == result.segments[1].mask).all()


def test_inputs_path_pil_array_and_batches(tmp_path):
    predictor, image = scene_predictor()
    path = tmp_path / "scene.png"
    Image.fromarray(image).save(path)
    by_array = predictor(image)
    results = predictor([str(path), Image.fromarray(image), image[:, :, 0]], batch_size=2)
    assert len(results) == 3
    for r in results:
        assert (r.panoptic_seg == by_array.panoptic_seg).all()
        assert r.depth_ranking == by_array.depth_ranking
    assert load_image(path).shape == image.shape


def test_bad_inputs_name_the_problem(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.jpg"):
        load_image(bad)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="uint8"):
        load_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        load_image(np.zeros((4, 4, 5), np.uint8))


def test_matrix_size_mismatch_is_an_error():
    _, panoptic, infos = make_scene(32, 32)
    output = {"panoptic_seg": (torch.from_numpy(panoptic), infos), "occlusion": torch.zeros(3, 3)}
    with pytest.raises(ValueError, match="4 thing segments"):
        result_from_output(output, ["a"] * 5, ["occlusion"])
    with pytest.raises(KeyError, match="depth"):
        result_from_output(output, ["a"] * 5, ["depth"])


def test_depth_ranking_uses_both_directions_and_is_a_permutation():
    generator = np.random.default_rng(0)
    p = generator.random((6, 6, 3))
    p /= p.sum(-1, keepdims=True)
    ranking = depth_ranking(p)
    assert sorted(ranking) == list(range(6))
    # instance 2 closer than everyone in its own row only: still first
    q = np.full((3, 3, 3), 1 / 3)
    q[2, :, :] = [0.0, 1.0, 0.0]
    assert depth_ranking(q)[0] == 2
    assert depth_ranking(np.zeros((0, 0, 3))) == []


@pytest.mark.parametrize("size", [(256, 256), (600, 1000)])
def test_pictures(size):
    predictor, image = scene_predictor(size=size)
    result = predictor(image)
    panoptic = draw_panoptic(image, result)
    assert panoptic.shape == image.shape and not (panoptic == image).all()
    occlusion, depth = draw_occlusion(image, result), draw_depth(image, result)
    for picture in (occlusion, depth):
        assert picture.shape[1] == image.shape[1] and picture.shape[0] > image.shape[0]
        assert picture.dtype == np.uint8
    # the closest thing is painted warm (red > blue), the farthest cool
    front, back = (
        result.segments[result.depth_ranking[0]],
        result.segments[result.depth_ranking[-1]],
    )
    ys, xs = np.nonzero(front.mask & ~_border(front.mask))
    colour = depth[ys[0], xs[0]].astype(int)
    assert colour[0] > colour[2]
    ys, xs = np.nonzero(back.mask & ~_border(back.mask))
    colour = depth[ys[0], xs[0]].astype(int)
    assert colour[2] > colour[0]
    assert draw_video_frame(image, result).shape == image.shape


def _border(mask: np.ndarray) -> np.ndarray:
    return cv2.dilate((~mask).astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)


def test_pictures_need_their_task():
    predictor, image = scene_predictor()
    result = predictor(image)
    result.occlusion = None
    result.depth_ranking = None
    with pytest.raises(ValueError, match="occlusion"):
        draw_occlusion(image, result)
    with pytest.raises(ValueError, match="depth"):
        draw_depth(image, result)


def test_anchor_point_is_inside_a_ring():
    ring = np.zeros((64, 64), np.uint8)
    cv2.circle(ring, (32, 32), 25, 1, 8)
    x, y = anchor_point(ring.astype(bool))
    assert ring[y, x] == 1


@pytest.fixture(scope="module")
def od_predictor():
    """Predictor over the tiny od model, from a config with evaluation on and panoptic off: the
    Predictor uses the config as it is and asks each call for the panoptic result."""
    torch.manual_seed(0)
    cfg = tiny_cfg()
    cfg.defrost()
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False
    predictor = Predictor(cfg)
    assert cfg.TEST.OCCLUSION_EVALUATION and cfg.TEST.DEPTH_EVALUATION  # left alone
    assert not cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON
    return predictor


def test_predictor_leaves_the_config_alone_and_reads_tasks_from_the_model(od_predictor):
    assert od_predictor.cfg.TEST.OCCLUSION_EVALUATION is True  # the rows follow the inputs
    assert od_predictor.cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON is False
    model = od_predictor.model
    assert type(model).__name__ == "InstaFormer" and model.geometric_predictor is not None
    assert not model.panoptic_on and not model.training  # as the config says
    assert od_predictor.tasks == ("occlusion", "depth") == model.output_tasks
    result = od_predictor(make_scene(48, 64)[0])  # panoptic asked per call
    assert result.panoptic_seg.shape == (48, 64) and result.occlusion.shape[0] == len(
        result.segments
    )
    with pytest.raises(ValueError, match="PANOPTIC_ON"):  # segment rows need the panoptic result
        model([od_predictor.preprocess(make_scene(48, 64)[0])])


def test_tiny_od_model_orders_its_thing_segments(od_predictor):
    image = make_scene(64, 96)[0]
    with torch.inference_mode():
        output = od_predictor.model([od_predictor.preprocess(image)], results=("panoptic_seg",))[0]
    result = od_predictor.postprocess(output)
    assert result.image_size == (64, 96) and result.panoptic_seg.shape == (64, 96)

    # rows = the thing segments, in segments_info order, named by order_segment_ids
    infos = output["panoptic_seg"][1]
    things = [int(i["id"]) for i in infos if i["isthing"]]
    k = len(result.segments)
    assert k >= 2, "the random-init model should find several things in the scene"
    assert [s.id for s in result.segments] == things == output["order_segment_ids"].tolist()
    assert {s.id for s in result.stuff_segments} == {int(i["id"]) for i in infos} - set(things)
    assert set(np.unique(result.panoptic_seg)) - {0} == {int(i["id"]) for i in infos}
    for seg in result.segments:
        assert seg.isthing and seg.area > 0 and (seg.mask == (result.panoptic_seg == seg.id)).all()

    # matrices: k x k, -1 diagonals, labels = the most probable class, probabilities in [0, 1]
    off = ~np.eye(k, dtype=bool)
    assert result.occlusion.shape == (k, k) and result.depth.shape == (k, k)
    assert result.occlusion.dtype == result.depth.dtype == np.int64
    assert (np.diag(result.occlusion) == -1).all() and (np.diag(result.depth) == -1).all()
    assert set(np.unique(result.occlusion[off])) <= {0, 1}
    assert set(np.unique(result.depth[off])) <= {0, 1, 2}
    occ_p, depth_p = result.occlusion_prob, result.depth_prob
    assert occ_p.shape == (k, k) and depth_p.shape == (k, k, 3)
    for p in (occ_p, depth_p):
        assert ((p >= 0) & (p <= 1)).all() and (p[~off] == 0).all()
    assert np.allclose(depth_p[off].sum(-1), 1, atol=1e-5)
    assert ((occ_p[off] > 0.5) == (result.occlusion[off] == 1)).all()
    assert (depth_p.argmax(-1)[off] == result.depth[off]).all()
    assert np.allclose(occ_p, output["occlusion_prob"].numpy())

    # ranking: a permutation, closest first by the Borda count
    assert sorted(result.depth_ranking) == list(range(k))
    assert result.depth_ranking == depth_ranking(depth_p)

    # JSON round trip
    loaded = json.loads(result.to_json(include_masks=True))
    assert loaded == json.loads(json.dumps(result.to_dict(include_masks=True)))
    assert [s["id"] for s in loaded["segments"]] == things
    assert [s["index"] for s in loaded["segments"]] == list(range(k))
    assert loaded["occlusion"] == result.occlusion.tolist()
    assert loaded["depth"] == result.depth.tolist()
    assert np.allclose(loaded["occlusion_prob"], occ_p) and np.allclose(
        loaded["depth_prob"], depth_p
    )
    assert loaded["depth_ranking"] == result.depth_ranking
    assert [s["depth_rank"] for s in loaded["segments"]] == result.depth_rank


BATCH_TOLERANCE = 1e-4
"""Largest difference allowed between a batched and a single-image forward (logits, mask logits,
order probabilities). The two compute the same function, but the CPU kernels (oneDNN
convolutions, BLAS matrix products) split their sums differently for a batch of two, so values
differ in the last bits (measured: up to ~7e-6 on mask logits). A panoptic pixel whose two best
queries, or whose mask logit and 0, are closer than that may therefore change segment; every
other pixel, segment and order must be the same."""


def _record_panoptic_inputs(monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Record ``(mask_cls, mask_pred)`` of every panoptic_inference call of the model."""
    import mask2former.modeling.meta_arch as m2f_meta_arch

    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = m2f_meta_arch.panoptic_inference

    def recording(mask_cls, mask_pred, **kwargs):
        calls.append((mask_cls.clone(), mask_pred.clone()))
        return original(mask_cls, mask_pred, **kwargs)

    monkeypatch.setattr(m2f_meta_arch, "panoptic_inference", recording)
    return calls


def _near_ties(
    mask_cls: torch.Tensor, mask_pred: torch.Tensor, keep: torch.Tensor, eps: float
) -> np.ndarray:
    """bool[H, W]: pixels whose panoptic decision may flip when every logit moves by ``eps``.

    A pixel goes to the kept query maximising ``p(class) * sigmoid(mask)``; both factors move by
    at most ``eps / 4`` (slopes of softmax and sigmoid), so that product by at most ``eps / 2``
    and the gap between the best two by at most ``eps``. The pixel is void when the winner's mask
    logit is below 0.
    """
    scores = mask_cls.softmax(-1).max(-1).values[keep]
    logits = mask_pred[keep]
    weighted = scores[:, None, None] * logits.sigmoid()
    top = weighted.topk(min(2, len(scores)), dim=0).values
    gap = top[0] - top[1] if len(scores) > 1 else torch.full_like(top[0], float("inf"))
    return ((gap <= eps) | (logits.abs() <= eps).any(0)).numpy()


def test_tiny_od_model_batches_like_single_images(od_predictor, monkeypatch):
    images = [make_scene(64, 96)[0], make_scene(64, 96, n=3)[0][::-1].copy()]
    calls = _record_panoptic_inputs(monkeypatch)
    single = [od_predictor(x) for x in images]
    batched = od_predictor(images, batch_size=2)
    assert len(calls) == 4
    for index, (a, b) in enumerate(zip(single, batched, strict=True)):
        (cls_a, masks_a), (cls_b, masks_b) = calls[index], calls[2 + index]
        torch.testing.assert_close(cls_b, cls_a, atol=BATCH_TOLERANCE, rtol=0)
        torch.testing.assert_close(masks_b, masks_a, atol=BATCH_TOLERANCE, rtol=0)
        probs = cls_a.softmax(-1).topk(2, dim=-1).values
        labels_a, labels_b = cls_a.argmax(-1), cls_b.argmax(-1)
        flipped = labels_a != labels_b  # only a class decision closer than the tolerance may flip
        assert (probs[flipped, 0] - probs[flipped, 1] <= BATCH_TOLERANCE).all()
        if flipped.any():
            continue  # a different query set: the segmentation legitimately differs
        eps = max((cls_a - cls_b).abs().max().item(), (masks_a - masks_b).abs().max().item())
        ties = _near_ties(cls_a, masks_a, labels_a != cls_a.shape[-1] - 1, eps)
        assert ties.mean() < 0.01  # the exemption stays small: near-ties are rare
        assert ((a.panoptic_seg != b.panoptic_seg) <= ties).all()
        by_query_a = {s.query_index: s for s in a.segments + a.stuff_segments}
        by_query_b = {s.query_index: s for s in b.segments + b.stuff_segments}
        for query in by_query_a.keys() | by_query_b.keys():
            if query not in by_query_a or query not in by_query_b:
                seg = by_query_a.get(query) or by_query_b[query]
                assert (seg.mask <= ties).all(), "only a segment made of near-ties may vanish"
                continue
            sa, sb = by_query_a[query], by_query_b[query]
            assert ((sa.mask != sb.mask) <= ties).all()
            assert sa.score == pytest.approx(sb.score, abs=BATCH_TOLERANCE)
        # orders of the thing segments found in both, matched by query
        rows_a = {s.query_index: i for i, s in enumerate(a.segments)}
        rows_b = {s.query_index: i for i, s in enumerate(b.segments)}
        common = [q for q in rows_a if q in rows_b]
        assert len(common) >= 2
        ia, ib = [rows_a[q] for q in common], [rows_b[q] for q in common]
        for name in ("occlusion_prob", "depth_prob"):
            pa, pb = getattr(a, name)[np.ix_(ia, ia)], getattr(b, name)[np.ix_(ib, ib)]
            assert np.allclose(pa, pb, atol=BATCH_TOLERANCE, rtol=0), name


def test_tiny_od_model_scores_are_class_probabilities_and_threshold_filters_them(od_predictor):
    image = make_scene(64, 96)[0]
    result = od_predictor(image)
    segments = result.segments + result.stuff_segments
    scores = [s.score for s in segments]
    assert len(segments) >= 3 and all(0 < s <= 1 for s in scores)
    assert len(set(scores)) > 1, "scores are the queries' class probabilities, not a constant"
    loaded = json.loads(result.to_json())
    assert [s["score"] for s in loaded["segments"]] == [s.score for s in result.segments]

    # the object-mask threshold (--confidence-threshold) compares the very score that is shown
    threshold = float(np.median(scores))
    cfg = od_predictor.cfg.clone()
    cfg.defrost()
    cfg.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD = threshold
    model = build_model(cfg)  # the threshold is read when the model is built
    model.load_state_dict(od_predictor.model.state_dict())
    filtered = Predictor(cfg, model=model)(image)
    kept = filtered.segments + filtered.stuff_segments
    assert 0 < len(kept) < len(segments)
    assert all(s.score > threshold for s in kept)
    shown = {s.query_index: s.score for s in segments}
    assert all(shown[s.query_index] == s.score for s in kept)
