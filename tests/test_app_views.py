"""The interactive viewer's data and pictures (instaformer.apps.interactive), without a browser.

The scene of ``scene_predictor``: things with ids 10, 11, 12, 13 painted back to front, so 13 is
the closest, and each thing occludes the one painted just before it (11 occludes 10, ...).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_demo_predictor import scene_predictor

from instaformer.apps.demo_utils import save_result
from instaformer.apps.interactive import (
    View,
    instance_choices,
    parse_choice,
    ranking_rows,
    relation_rows,
    relations_of,
    segment_at,
)
from instaformer.apps.visualization import RELATION_COLORS


@pytest.fixture(scope="module")
def view() -> View:
    predictor, image = scene_predictor()
    return View.predict(predictor, image, source="scene.png")


def _row(view: View, segment_id: int) -> int:
    return [s.id for s in view.result.segments].index(segment_id)


def _own_pixels(view: View, row: int) -> np.ndarray:
    """``bool[H', W']`` pixels of the picture (enlarged image) covered by ``row`` alone."""
    masks = [s.mask for s in view.result.segments]
    alone = masks[row] & ~np.any([m for i, m in enumerate(masks) if i != row], axis=0)
    f = view.factor
    return np.repeat(np.repeat(alone, f, axis=0), f, axis=1)


def _median_color(picture: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    return np.median(picture[: pixels.shape[0]][pixels], axis=0)


def _is_grey(color: np.ndarray) -> bool:
    return float(color.max() - color.min()) < 8


def test_relations_of_an_instance_follow_the_matrices(view):
    result = view.result
    i = _row(view, 11)
    found = {(result.segments[r.other].id, r.kind): r.probability for r in relations_of(result, i)}
    assert found == pytest.approx(
        {
            (12, "occludes it"): 0.9,
            (10, "occluded by it"): 0.9,
            (10, "farther"): 0.7,
            (12, "closer"): 0.8,
            (13, "closer"): 0.8,
        }
    )
    assert relation_rows(result, i)[0][:3] == ["#10", result.segments[_row(view, 10)].class_name,
                                               "occluded by it"]  # fmt: skip
    with pytest.raises(IndexError, match="out of range for 4"):
        relations_of(result, 4)


@pytest.mark.parametrize("selected", [10, 11, 12, 13])
def test_selecting_an_instance_colours_exactly_its_relations(view, selected):
    i = _row(view, selected)
    pictures = view.select(i)
    assert set(pictures) == {"occlusion", "depth"}
    kinds = {"occlusion": {}, "depth": {}}
    for rel in relations_of(view.result, i):
        task = "occlusion" if rel.kind.startswith("occlu") else "depth"
        kinds[task][rel.other] = rel.kind
    for task, picture in pictures.items():
        assert picture.shape[1] == view.image.shape[1] * view.factor
        for j, seg in enumerate(view.result.segments):
            if j == i:
                continue
            color = _median_color(picture, _own_pixels(view, j))
            if j not in kinds[task]:
                assert _is_grey(color), (task, seg.id, color)
                continue
            expected = np.array(RELATION_COLORS[kinds[task][j]], float)
            others = [np.array(c, float) for k, c in RELATION_COLORS.items()
                      if k != kinds[task][j]]  # fmt: skip

            # blended over a grey image: closest in hue to its relation's colour
            def hue_distance(c, color=color):
                unit = (color - color.mean()) / (np.linalg.norm(color - color.mean()) + 1e-6)
                ref = (c - c.mean()) / np.linalg.norm(c - c.mean())
                return 1 - float(unit @ ref)

            assert not _is_grey(color), (task, seg.id)
            assert hue_distance(expected) < min(hue_distance(c) for c in others), (task, seg.id)


@pytest.mark.parametrize("step", [0, 1, 2, 4])
def test_depth_layers_show_the_front_most_instances(view, step):
    picture = view.depth_layers(step)
    front = {view.result.depth_ranking[p] for p in range(step)}
    assert [view.result.segments[r].id for r in view.result.depth_ranking] == [13, 12, 11, 10]
    for j in range(len(view.result.segments)):
        color = _median_color(picture, _own_pixels(view, j))
        assert _is_grey(color) == (j not in front), (step, view.result.segments[j].id, color)


def test_clicks_and_picker_name_the_instance_under_the_pointer(view):
    for j in range(len(view.result.segments)):
        ys, xs = np.nonzero(_own_pixels(view, j))
        x, y = int(np.median(xs)), int(np.median(ys))
        assert view.instance_at(x, y) == j
        assert parse_choice(view.result, instance_choices(view.result)[j]) == j
    assert view.instance_at(1, 1) is None  # sky: stuff
    assert segment_at(view.result, -1, 0) is None
    assert parse_choice(view.result, "#99 nothing") is None


def test_json_and_tables_match_the_demo(view, tmp_path):
    written = save_result(view.image, view.result, tmp_path, "scene", source="scene.png")
    demo_json = next(p for p in written if p.suffix == ".json").read_text()
    assert json.loads(view.to_json()) == json.loads(demo_json)
    ranks = ranking_rows(view.result)
    assert [row[:2] for row in ranks] == [[1, "#13"], [2, "#12"], [3, "#11"], [4, "#10"]]
    graph = view.occlusion_graph()
    assert graph.ndim == 3 and graph.dtype == np.uint8


def test_small_images_are_drawn_enlarged_and_large_ones_as_they_are(view):
    assert view.factor == 4  # 96 px short side -> at least 384 px
    assert view.panoptic().shape[:2] == (96 * 4, 128 * 4)
    predictor, image = scene_predictor(size=(400, 500))
    big = View.predict(predictor, image)
    assert big.factor == 1 and big.panoptic().shape[:2] == (400, 500)


def test_results_of_random_weights_are_marked(tmp_path):
    from test_demo_predictor import LOW_THRESHOLDS, OD_CONFIG

    from instaformer.apps.interactive import weights_warning
    from instaformer.predictor import Predictor

    opts = [*LOW_THRESHOLDS, "MODEL.DEVICE", "cpu"]
    random = Predictor.from_config_file(OD_CONFIG, weights="", opts=opts)
    state = random.model.state_dict()
    assert random.random_weights == [name for name, _ in random.model.named_parameters()]
    assert weights_warning(random).startswith("**Random weights:** no checkpoint was loaded")
    head = [name for name in random.random_weights if name.startswith("geometric_predictor.")]
    assert head, "the tiny od model has an order head"
    partial = tmp_path / "no_head.pth"
    kept = {k: v for k, v in state.items() if not k.startswith("geometric_predictor.")}
    torch.save({"model": kept}, partial)
    loaded = Predictor.from_config_file(OD_CONFIG, weights=str(partial), opts=opts)
    assert sorted(loaded.random_weights) == sorted(head)
    warning = weights_warning(loaded)
    assert warning.startswith(f"**Partly random weights:** {len(head)} of the model's weights")
    assert f"are not in {partial} and stay random ({head[0]}" in warning
    full = tmp_path / "full.pth"
    torch.save({"model": state}, full)
    assert weights_warning(Predictor.from_config_file(OD_CONFIG, str(full), opts)) == ""
    assert weights_warning(scene_predictor()[0]) == ""  # a given model: nothing known
