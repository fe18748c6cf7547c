"""What the interactive viewer (``demo/app.py``) shows, as plain data: no web framework here.

Shape shorthand: H x W the image; k thing segments, ``result.segments[i]`` being row/column i of
every order matrix. Instances are named by their segment id (``#<id>``), as in the pictures.

* :func:`segment_at`: which thing segment lies under a clicked pixel.
* :func:`relations_of`: for one selected instance, every other instance with what it is to the
  selected one (occludes it, is occluded by it, closer, farther, same depth) and the probability.
* :func:`ranking_rows`: the depth ranking as table rows, closest first.
* :func:`instance_choices` / :func:`parse_choice`: the labels of an instance picker and back.
* :class:`View`: one prediction with everything the page shows of it (pictures, tables, the
  JSON that ``demo/demo.py`` writes), the event handlers being its methods.
* :func:`read_upload`: an uploaded file as an image, refused in words that name the upload.
* :func:`weights_warning`: the line that marks a result of a model with random weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from instaformer.apps.demo_utils import result_record
from instaformer.apps.visualization import (
    CLOSER,
    FARTHER,
    MUTUAL_OCCLUSION,
    OCCLUDED_BY_SELECTED,
    OCCLUDES_SELECTED,
    SAME_DEPTH,
    draw_depth_layers,
    draw_occlusion_graph,
    draw_panoptic,
    draw_relations,
    drawing_factor,
)
from instaformer.data.io import DataError
from instaformer.predictor import Predictor, load_image
from instaformer.structures import OrderResult
from instaformer.vocabulary import DEPTH_CLOSER, DEPTH_FARTHER, DEPTH_SAME, OCCLUDING

__all__ = [
    "View",
    "Relation",
    "RELATION_KINDS",
    "instance_choices",
    "parse_choice",
    "ranking_rows",
    "read_upload",
    "relation_rows",
    "relations_of",
    "segment_at",
    "weights_warning",
]

RELATION_KINDS = (OCCLUDES_SELECTED, OCCLUDED_BY_SELECTED, CLOSER, FARTHER, SAME_DEPTH)
_DEPTH_WORDS = {DEPTH_CLOSER: CLOSER, DEPTH_FARTHER: FARTHER, DEPTH_SAME: SAME_DEPTH}


@dataclass(frozen=True)
class Relation:
    """Instance ``other`` (a row index of the result) is ``kind`` relative to the selected one.

    ``probability`` is the model's probability of that relation (1.0 when the model gives only
    hard labels).
    """

    other: int
    kind: str
    probability: float


def segment_at(result: OrderResult, x: int, y: int) -> int | None:
    """Row index of the thing segment under pixel ``(x, y)`` of the result's image, or ``None``
    (background, stuff or outside the image)."""
    height, width = result.image_size
    if not (0 <= x < width and 0 <= y < height):
        return None
    segment_id = int(result.panoptic_seg[y, x])
    for index, seg in enumerate(result.segments):
        if seg.id == segment_id:
            return index
    return None


def relations_of(result: OrderResult, index: int) -> list[Relation]:
    """Every predicted relation between instance ``index`` and the other instances.

    Occlusion: ``occlusion[j, index] = 1`` gives "occludes it" (with ``occlusion_prob[j, index]``)
    and ``occlusion[index, j] = 1`` gives "occluded by it"; both may hold (mutual occlusion).
    Depth: ``depth[j, index]`` gives exactly one of "closer", "farther", "same depth" for each j,
    with ``depth_prob[j, index, class]``.

    Args:
        result: a prediction.
        index: row of the selected instance, ``0 <= index < k``.

    Returns:
        Relations sorted by ``other`` then by :data:`RELATION_KINDS` order.

    Raises:
        IndexError: ``index`` is not a row of the result.
    """
    k = len(result.segments)
    if not 0 <= index < k:
        raise IndexError(f"instance index {index} is out of range for {k} instance(s)")
    relations = []
    for j in range(k):
        if j == index:
            continue
        if result.occlusion is not None:
            prob = result.occlusion_prob
            if result.occlusion[j, index] == OCCLUDING:
                p = 1.0 if prob is None else float(prob[j, index])
                relations.append(Relation(j, OCCLUDES_SELECTED, p))
            if result.occlusion[index, j] == OCCLUDING:
                p = 1.0 if prob is None else float(prob[index, j])
                relations.append(Relation(j, OCCLUDED_BY_SELECTED, p))
        if result.depth is not None:
            label = int(result.depth[j, index])
            p = 1.0 if result.depth_prob is None else float(result.depth_prob[j, index, label])
            relations.append(Relation(j, _DEPTH_WORDS[label], p))
    return relations


def ranking_rows(result: OrderResult) -> list[list]:
    """The depth ranking as rows ``[rank (1 = closest), "#id", class, score]`` (score None when
    the result has none); empty without the depth task."""
    if result.depth_ranking is None:
        return []
    rows = []
    for position, index in enumerate(result.depth_ranking):
        seg = result.segments[index]
        score = None if seg.score is None else round(seg.score, 3)
        rows.append([position + 1, f"#{seg.id}", seg.class_name, score])
    return rows


def instance_choices(result: OrderResult) -> list[str]:
    """One label per instance, ``"#<id> <class>"``, in row order."""
    return [f"#{seg.id} {seg.class_name}" for seg in result.segments]


def parse_choice(result: OrderResult, choice: str | None) -> int | None:
    """Row index of an :func:`instance_choices` label, ``None`` for no or an unknown label."""
    if not choice:
        return None
    choices = instance_choices(result)
    return choices.index(choice) if choice in choices else None


def relation_rows(result: OrderResult, index: int) -> list[list]:
    """:func:`relations_of` as table rows ``["#id", class, relation, probability]``."""
    rows = []
    for rel in relations_of(result, index):
        seg = result.segments[rel.other]
        rows.append([f"#{seg.id}", seg.class_name, rel.kind, round(rel.probability, 3)])
    return rows


def read_upload(path: str) -> tuple[np.ndarray, str]:
    """An uploaded file (kept by the web framework under a name of its own choosing) as an RGB
    ``uint8[H, W, 3]`` image, by the rules of every entry point (:func:`load_image`).

    Returns:
        The image and the upload's file name.

    Raises:
        ValueError: not an image, an unsupported pixel type or an image over the size limits;
            the message names the upload by its file name, never by the server's path.
    """
    name = Path(path).name
    try:
        return load_image(path), name
    except (DataError, FileNotFoundError) as err:
        reason = str(err).replace(path, name)
        raise ValueError(f"the uploaded file {name} cannot be used: {reason}") from None


def weights_warning(predictor: Predictor) -> str:
    """A line that marks what the predictor's model computes without trained weights: all of it
    (no checkpoint), or the parameters its checkpoint did not fill; empty when the checkpoint
    filled every parameter, or when the model was given ready-made."""
    random = predictor.random_weights
    if not random:
        return ""
    if not predictor.cfg.MODEL.WEIGHTS:
        return (
            "**Random weights:** no checkpoint was loaded, so the model is randomly "
            "initialised: the segments and orders below are meaningless."
        )
    shown = ", ".join(random[:3]) + (f" and {len(random) - 3} more" if len(random) > 3 else "")
    return (
        f"**Partly random weights:** {len(random)} of the model's weights are not in "
        f"{predictor.cfg.MODEL.WEIGHTS} and stay random ({shown}): what those parts compute "
        "below is meaningless."
    )


DISPLAY_MIN_SIDE = 384  # pictures of smaller images are drawn enlarged (pixels)


@dataclass
class View:
    """One image and its prediction, and what the viewer shows of them.

    Pictures of images whose short side is under ``DISPLAY_MIN_SIDE`` pixels are drawn enlarged
    by the integer :attr:`factor`, so that labels stay legible; :meth:`instance_at` takes
    picture coordinates.

    Attributes:
        image: ``uint8[H, W, 3]`` RGB, the image the prediction was made on.
        result: the prediction.
        source: a name for the image (the uploaded file's name), written into the JSON.
    """

    image: np.ndarray
    result: OrderResult
    source: str | None = None

    def __post_init__(self) -> None:
        self.factor = drawing_factor(self.image, DISPLAY_MIN_SIDE)

    def instance_at(self, x: int, y: int) -> int | None:
        """Row of the thing segment under pixel ``(x, y)`` of a picture, or ``None``."""
        return segment_at(self.result, x // self.factor, y // self.factor)

    @classmethod
    def predict(cls, predictor: Predictor, image: np.ndarray, source: str | None = None) -> View:
        """Run ``predictor`` on an RGB ``uint8[H, W, 3]`` image."""
        return cls(image=image, result=predictor(image), source=source)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The order tasks of the prediction, among ``("occlusion", "depth")``."""
        present = (("occlusion", self.result.occlusion), ("depth", self.result.depth))
        return tuple(task for task, matrix in present if matrix is not None)

    def to_json(self) -> str:
        """The JSON record ``demo/demo.py`` writes for this image (same keys and values)."""
        return json.dumps(result_record(self.result, self.source))

    def panoptic(self) -> np.ndarray:
        """The panoptic overlay with instance ids and class names."""
        return draw_panoptic(self.image, self.result, min_side=DISPLAY_MIN_SIDE)

    def occlusion_graph(self) -> np.ndarray | None:
        """The occlusion graph picture, ``None`` without the occlusion task."""
        return None if self.result.occlusion is None else draw_occlusion_graph(self.result)

    def depth_layers(self, step: int) -> np.ndarray | None:
        """The ``step`` front-most instances revealed, ``None`` without the depth task."""
        if self.result.depth_ranking is None:
            return None
        return draw_depth_layers(self.image, self.result, step, min_side=DISPLAY_MIN_SIDE)

    def select(self, index: int) -> dict[str, np.ndarray]:
        """Pictures of instance ``index``'s relations: ``{"occlusion": ..., "depth": ...}`` for
        the prediction's tasks, each other instance coloured by what it is to ``index``."""
        relations = relations_of(self.result, index)
        pictures = {}
        for task in self.tasks:
            kinds: dict[int, tuple[str, float]] = {}
            for rel in relations:
                if (rel.kind in (OCCLUDES_SELECTED, OCCLUDED_BY_SELECTED)) != (task == "occlusion"):
                    continue
                if rel.other in kinds:  # both directions: mutual occlusion
                    kinds[rel.other] = (MUTUAL_OCCLUSION, max(kinds[rel.other][1], rel.probability))
                else:
                    kinds[rel.other] = (rel.kind, rel.probability)
            pictures[task] = draw_relations(
                self.image, self.result, index, kinds, min_side=DISPLAY_MIN_SIDE
            )
        return pictures
