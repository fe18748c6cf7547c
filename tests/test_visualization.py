"""Order pictures stay legible: labels and nodes inside the picture and apart, from 20 px to
12 MP and from 2 to 100 instances; one numbering (segment ids); arrows limited."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instaformer.apps.visualization import (
    MAX_ARROWS,
    Layout,
    draw_depth,
    draw_occlusion,
    draw_panoptic,
    draw_video_frame,
)
from instaformer.structures import OrderResult, result_from_output


def grid_result(height: int, width: int, things: int, seed: int = 0) -> OrderResult:
    """A stuff background and ``things`` rectangles on a grid (ids 2, 3, ...), with random
    occlusion (about half the pairs) and depth probabilities."""
    rng = np.random.default_rng(seed)
    panoptic = np.ones((height, width), np.int32)
    side = int(np.ceil(np.sqrt(things)))
    cell_h, cell_w = height / side, width / side
    infos = [{"id": 1, "category_id": 0, "isthing": False, "score": 0.9, "query_index": 0}]
    for t in range(things):
        r, c = divmod(t, side)
        y0, x0 = int(r * cell_h), int(c * cell_w)
        y1, x1 = max(y0 + 1, int((r + 0.8) * cell_h)), max(x0 + 1, int((c + 0.8) * cell_w))
        panoptic[y0:y1, x0:x1] = t + 2
        infos.append(
            {"id": t + 2, "category_id": 1 + t % 3, "isthing": True, "score": 0.5 + 0.005 * t,
             "query_index": t + 1}
        )  # fmt: skip
    occ_p = rng.random((things, things)).astype(np.float32)
    np.fill_diagonal(occ_p, 0)
    depth_p = rng.random((things, things, 3)).astype(np.float32)
    depth_p /= depth_p.sum(-1, keepdims=True)
    depth_p[np.arange(things), np.arange(things)] = 0
    occ = torch.from_numpy((occ_p > 0.5).astype(np.int64)).fill_diagonal_(-1)
    output = {
        "panoptic_seg": (torch.from_numpy(panoptic), infos),
        "occlusion": occ,
        "occlusion_prob": torch.from_numpy(occ_p),
        "depth": torch.from_numpy(depth_p.argmax(-1)).fill_diagonal_(-1),
        "depth_prob": torch.from_numpy(depth_p),
    }
    return result_from_output(output, ["sky", "car", "person", "dog"], ["occlusion", "depth"])


def _inside(box, height: int, width: int) -> bool:
    x0, y0, x1, y1 = box
    return 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height


def _apart(boxes) -> bool:
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            p, q = boxes[a], boxes[b]
            if p[0] < q[2] and q[0] < p[2] and p[1] < q[3] and q[1] < p[3]:
                return False
    return True


def _check(picture: np.ndarray, layout: Layout, legend: bool) -> None:
    height, width = layout.size
    assert picture.shape[1] == width and picture.dtype == np.uint8
    band = picture.shape[0] - height
    assert (band > 0) == legend
    boxes = [box for _, box in layout.labels]
    for segment_id, (cx, cy), radius in layout.nodes:
        assert radius <= cx < width - radius and radius <= cy < height - radius, segment_id
        boxes.append((cx - radius, cy - radius, cx + radius + 1, cy + radius + 1))
    assert all(_inside(box, height, width) for box in boxes)
    assert _apart([box for _, box in layout.labels])
    for _, box in layout.legend:
        assert _inside(box, band, width)
    if legend:
        assert band <= height // 3, "the legend stays small next to the image"


@pytest.mark.parametrize(
    ("height", "width", "things"), [(20, 20, 2), (96, 96, 4), (480, 640, 100), (3000, 4000, 5)]
)
def test_pictures_keep_labels_and_nodes_inside_and_apart(height, width, things):
    result = grid_result(height, width, things)
    image = np.full((height, width, 3), 128, np.uint8)
    for draw, legend in ((draw_panoptic, False), (draw_occlusion, True), (draw_depth, True)):
        layout = Layout()
        picture = draw(image, result, layout=layout)
        _check(picture, layout, legend)
        assert layout.factor == (1 if min(height, width) >= 256 else -(-256 // min(height, width)))
        if draw is not draw_panoptic:
            assert len(layout.nodes) == things  # every thing gets its node
    assert draw_video_frame(image, result).shape == image.shape  # frames keep their size


def test_one_numbering_segment_ids_with_the_depth_rank_as_a_label():
    result = grid_result(480, 640, 6)
    image = np.zeros((480, 640, 3), np.uint8)
    ids = [s.id for s in result.segments]
    assert ids != list(range(len(ids)))  # ids, not row indices
    panoptic, occlusion, depth = Layout(), Layout(), Layout()
    draw_panoptic(image, result, layout=panoptic)
    draw_occlusion(image, result, layout=occlusion)
    draw_depth(image, result, layout=depth)
    things = [text for text, _ in panoptic.labels if text.startswith("#")]
    assert sorted(int(text.split()[0][1:]) for text in things) == sorted(ids)
    assert all(text.split()[1] in {"car", "person", "dog"} for text in things)
    assert sorted(n[0] for n in occlusion.nodes) == sorted(n[0] for n in depth.nodes) == ids
    ranks = sorted(text for text, _ in depth.labels)
    assert ranks == sorted(f"rank {r}" for r in range(1, 7))
    # the closest segment's node is the one whose label says rank 1 (label touches its node)
    closest = result.segments[result.depth_ranking[0]].id
    (_, (cx, cy), radius) = next(n for n in depth.nodes if n[0] == closest)
    box = next(box for text, box in depth.labels if text == "rank 1")
    gap_x = max(box[0] - (cx + radius), (cx - radius) - box[2], 0)
    gap_y = max(box[1] - (cy + radius), (cy - radius) - box[3], 0)
    assert max(gap_x, gap_y) <= 4


def test_occlusion_arrows_limited_to_the_most_probable():
    result = grid_result(480, 640, 30, seed=1)
    image = np.zeros((480, 640, 3), np.uint8)
    pairs = int((result.occlusion == 1).sum())
    assert pairs > MAX_ARROWS
    layout = Layout()
    draw_occlusion(image, result, layout=layout)
    assert len(layout.arrows) == MAX_ARROWS
    index = {s.id: i for i, s in enumerate(result.segments)}
    drawn = [float(result.occlusion_prob[index[a], index[b]]) for a, b in layout.arrows]
    off = result.occlusion == 1
    assert min(drawn) >= np.sort(result.occlusion_prob[off])[-MAX_ARROWS] - 1e-7
    assert f"the {MAX_ARROWS} most likely of {pairs} pairs" in " ".join(t for t, _ in layout.legend)
    everything = Layout()
    draw_occlusion(image, result, max_arrows=None, layout=everything)
    assert len(everything.arrows) == pairs
