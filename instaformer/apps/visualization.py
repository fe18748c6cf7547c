"""Pictures of an :class:`~instaformer.structures.OrderResult` (OpenCV/NumPy drawing only).

Shape shorthand: H x W the image; k thing segments; f the drawing factor (1, or the integer
that brings a small image's short side to ``min_side`` pixels). Every function takes an RGB
``uint8[H, W, 3]`` array and returns an RGB ``uint8[f H (+ band), f W, 3]`` picture (a legend
band under the image for occlusion and depth).

One numbering across all pictures and the JSON: a thing is called ``#id`` by its segment
``id`` (``Segment.id``, the value of its pixels in ``panoptic_seg``), and keeps the same colour
in the panoptic and occlusion pictures.

* :func:`draw_panoptic`: segments overlaid on the image; things labelled ``#id class score``
  (shortened to ``#id class`` or ``#id`` where there is no room).
* :func:`draw_occlusion`: arrows from occluder to occluded between the things' nodes; only the
  ``max_arrows`` most probable occlusions are drawn unless asked for all.
* :func:`draw_depth`: things coloured from front (warm) to back (cool), each node ``#id``
  with its depth rank (1 = closest) as a label.

Legibility from 20 px to 12 MP images: fonts, nodes and lines scale with the picture; small
images are drawn enlarged; labels are placed where they overlap neither another label nor a
node, and are shortened or left out otherwise; nodes and labels stay inside the picture.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from instaformer.structures import OrderResult
from instaformer.vocabulary import OCCLUDING
from mask2former.structures import mask_bbox

__all__ = [
    "Layout",
    "anchor_point",
    "RELATION_COLORS",
    "draw_depth",
    "draw_depth_layers",
    "draw_occlusion",
    "draw_occlusion_graph",
    "draw_relations",
    "drawing_factor",
    "draw_panoptic",
    "draw_video_frame",
    "instance_colors",
]

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), pixels of the picture
Color = tuple[int, int, int]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE: Color = (255, 255, 255)
_BLACK: Color = (0, 0, 0)
MIN_SIDE = 256
"""Default ``min_side``: images whose short side is smaller are drawn enlarged."""
MAX_ARROWS = 20
"""Default ``max_arrows`` of :func:`draw_occlusion`."""
_MIN_SCALE = 0.35  # smallest font scale (about 8 px high text)


@dataclass
class Layout:
    """What a picture placed where (pass one to a ``draw_*`` function to receive it).

    ``labels``: ``(text, box)`` of every text label drawn on the image; ``nodes``: ``(segment
    id, centre, radius)``; ``arrows``: ``(occluder id, occluded id)``; ``legend``: ``(text,
    box)`` in the legend band (``box`` relative to the band); ``size``: ``(height, width)`` of
    the image part of the picture; ``factor``: the drawing factor f.
    """

    labels: list[tuple[str, Box]] = field(default_factory=list)
    nodes: list[tuple[int, tuple[int, int], int]] = field(default_factory=list)
    arrows: list[tuple[int, int]] = field(default_factory=list)
    legend: list[tuple[str, Box]] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)
    factor: int = 1


def instance_colors(k: int) -> list[Color]:
    """k well-separated saturated RGB colours (golden-ratio hue steps), the same for any image."""
    colors = []
    for i in range(k):
        hue = (0.08 + i * 0.618034) % 1.0
        value = 0.95 if i % 2 == 0 else 0.8
        r, g, b = colorsys.hsv_to_rgb(hue, 0.75, value)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors


def _stuff_color(category_id: int) -> Color:
    r, g, b = colorsys.hsv_to_rgb((category_id * 0.137) % 1.0, 0.35, 0.75)
    return int(r * 255), int(g * 255), int(b * 255)


def anchor_point(mask: np.ndarray) -> tuple[int, int]:
    """``(x, y)`` of the mask pixel farthest from the mask border (inside even for rings).

    Computed on the mask's bounding box, so that it stays cheap on large images.
    """
    box = _crop(mask)
    if box is None:
        return 0, 0
    crop = mask[box]
    dist = cv2.distanceTransform(np.pad(crop.astype(np.uint8), 1), cv2.DIST_L2, 3)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return box[1].start + int(x) - 1, box[0].start + int(y) - 1


# -- sizes --------------------------------------------------------------------------------------
def _factor(image: np.ndarray, min_side: int) -> int:
    short = min(image.shape[:2])
    return max(1, math.ceil(min_side / max(1, short))) if min_side > 0 else 1


def _enlarge(array: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor (images and masks)."""
    if factor == 1:
        return array
    return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)


def _scale(shape: Sequence[int]) -> float:
    """Font scale from the picture size: about 1/45 of the short side per line of text."""
    return float(np.clip(min(shape[0], shape[1]) / 700.0, _MIN_SCALE, 4.0))


def _thickness(scale: float) -> int:
    return max(1, int(round(scale * 2)))


def _text_size(text: str, scale: float) -> tuple[int, int, int, int]:
    """``(width, height, baseline, padding)`` of a text box at ``scale``."""
    thick = _thickness(scale)
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, thick)
    return tw, th, base, max(2, thick + 1)


def _text_color(background: Color) -> Color:
    luminance = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return _BLACK if luminance > 150 else _WHITE


# -- placement ----------------------------------------------------------------------------------
def _overlaps(a: Box, b: Box, gap: int = 1) -> bool:
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


class _Placer:
    """Finds room for labels and nodes: inside the picture, overlapping nothing placed before."""

    def __init__(self, height: int, width: int, layout: Layout) -> None:
        self.height, self.width = height, width
        self.taken: list[Box] = []
        self.layout = layout

    def _inside(self, box: Box) -> Box:
        w, h = box[2] - box[0], box[3] - box[1]
        x0 = int(np.clip(box[0], 0, max(0, self.width - w)))
        y0 = int(np.clip(box[1], 0, max(0, self.height - h)))
        return x0, y0, x0 + w, y0 + h

    def free(self, box: Box) -> bool:
        return not any(_overlaps(box, other) for other in self.taken)

    def find(
        self,
        width: int,
        height: int,
        center: tuple[int, int],
        mask: np.ndarray | None,
        around: int = 0,
    ):
        """Top-left corner of a free ``width x height`` box near ``center`` (None if none).

        With ``around`` (a node's radius), the box touches that circle below, above, right or
        left of it first; otherwise the centre comes first. Then rings of growing distance;
        positions on ``mask`` are preferred.
        """
        step = max(height, 4)
        candidates = [(0, 0)]
        if around:
            dy, dx = around + height // 2 + 3, around + width // 2 + 3
            candidates = [(0, dy), (0, -dy), (dx, 0), (-dx, 0)]
        for ring in (1, 2, 3):
            d = ring * step + around
            candidates += [(0, -d), (0, d), (-d, 0), (d, 0), (-d, -d), (d, -d), (-d, d), (d, d)]
            candidates += [(0, -d - width // 2), (0, d + width // 2)] if ring == 1 else []
        fits: list[tuple[int, int, Box]] = []
        for order, (dx, dy) in enumerate(candidates):
            x0, y0 = center[0] + dx - width // 2, center[1] + dy - height // 2
            box = self._inside((x0, y0, x0 + width, y0 + height))
            if not self.free(box):
                continue
            cx = min((box[0] + box[2]) // 2, self.width - 1)
            cy = min((box[1] + box[3]) // 2, self.height - 1)
            off_mask = mask is not None and not mask[cy, cx]
            fits.append((int(off_mask), order, box))
        if not fits:
            return None
        return min(fits)[2]

    def label(
        self,
        image: np.ndarray,
        texts: Sequence[str],
        center: tuple[int, int],
        scale: float,
        background: Color = _BLACK,
        foreground: Color | None = None,
        mask: np.ndarray | None = None,
        around: int = 0,
    ) -> str | None:
        """Draw the first of ``texts`` (longest to shortest) that finds room; returns it.
        ``around``: the label belongs to a node of that radius at ``center`` (see :meth:`find`).
        """
        foreground = _text_color(background) if foreground is None else foreground
        for text in texts:
            tw, th, base, pad = _text_size(text, scale)
            width, height = tw + 2 * pad, th + base + 2 * pad
            if width > self.width or height > self.height:
                continue
            box = self.find(width, height, center, mask, around)
            if box is None:
                continue
            cv2.rectangle(image, box[:2], (box[2] - 1, box[3] - 1), background, -1)
            thick = _thickness(scale)
            cv2.putText(
                image, text, (box[0] + pad, box[1] + pad + th), _FONT, scale, foreground, thick,
                cv2.LINE_AA,
            )  # fmt: skip
            self.taken.append(box)
            self.layout.labels.append((text, box))
            return text
        return None

    def node(
        self,
        image: np.ndarray,
        segment_id: int,
        center: tuple[int, int],
        color: Color,
        scale: float,
        mask: np.ndarray | None = None,
    ) -> tuple[int, int]:
        """A filled circle with ``segment_id`` in it, inside the picture, moved off earlier
        nodes and labels when there is room nearby. Returns its centre."""
        text = str(segment_id)
        tw, th, _, _ = _text_size(text, scale)
        radius = int(max(tw, th) * 0.6) + max(3, _thickness(scale) + 1)
        side = 2 * radius + 1
        box = self.find(side, side, center, mask)
        if box is None:  # crowded: keep the anchor, clamped inside the picture
            x0, y0 = center[0] - radius, center[1] - radius
            box = self._inside((x0, y0, x0 + side, y0 + side))
        cx, cy = box[0] + radius, box[1] + radius
        cv2.circle(image, (cx, cy), radius, color, -1, cv2.LINE_AA)
        cv2.circle(image, (cx, cy), radius, _WHITE, max(1, _thickness(scale) - 1), cv2.LINE_AA)
        origin = (cx - tw // 2, cy + th // 2)
        cv2.putText(
            image, text, origin, _FONT, scale, _text_color(color), _thickness(scale), cv2.LINE_AA
        )
        self.taken.append(box)
        self.layout.nodes.append((segment_id, (cx, cy), radius))
        return cx, cy


# -- drawing helpers ----------------------------------------------------------------------------
def _crop(mask: np.ndarray) -> tuple[slice, slice] | None:
    """Row and column slices of the mask's bounding box (None for an empty mask)."""
    x, y, w, h = mask_bbox(mask)
    if w == 0:
        return None
    return slice(y, y + h), slice(x, x + w)


def _blend(image: np.ndarray, mask: np.ndarray, color: Color, alpha: float) -> None:
    box = _crop(mask)
    if box is None:
        return
    region = image[box]
    tinted = cv2.addWeighted(region, 1.0 - alpha, np.full_like(region, color), alpha, 0.0)
    np.copyto(region, tinted, where=mask[box][..., None])


def _contour(image: np.ndarray, mask: np.ndarray, color: Color, scale: float) -> None:
    box = _crop(mask)
    if box is None:
        return
    crop = np.pad(mask[box].astype(np.uint8), 1)  # padded: contours close at the box edges
    offset = (box[1].start - 1, box[0].start - 1)
    contours, _ = cv2.findContours(crop, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE, offset=offset)
    cv2.drawContours(image, contours, -1, color, max(1, _thickness(scale) - 1), cv2.LINE_AA)


def _dimmed(image: np.ndarray, factor: float = 0.45) -> np.ndarray:
    grey = cv2.convertScaleAbs(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), alpha=factor)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)


def _wrap(text: str, scale: float, width: int) -> list[str]:
    """Split ``text`` at spaces into lines no wider than ``width`` pixels (where possible)."""
    lines: list[str] = []
    for word in text.split(" "):
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and _text_size(candidate, scale)[0] <= width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines


def _legend(
    width: int, texts: Sequence[str], scale: float, layout: Layout, colorbar: bool = False
) -> np.ndarray:
    """A dark band ``width`` pixels wide with ``texts`` (wrapped to fit) and optionally a
    ``near [turbo colour bar] far`` row; the font never exceeds ``scale`` and shrinks to fit."""
    margin = max(3, int(6 * scale))
    longest = max(_text_size(t, 1.0)[0] for t in texts)
    scale = max(_MIN_SCALE * 0.8, min(scale, (width - 2 * margin) / max(1, longest)))
    lines = [line for text in texts for line in _wrap(text, scale, width - 2 * margin)]
    _, th, base, _ = _text_size("Ag", scale)
    line_h = th + base + margin
    rows = len(lines) + (1 if colorbar else 0)
    band = np.full((rows * line_h + margin, width, 3), 32, np.uint8)
    thick = _thickness(scale)
    for i, line in enumerate(lines):
        y = margin + i * line_h + th
        cv2.putText(band, line, (margin, y), _FONT, scale, _WHITE, thick, cv2.LINE_AA)
        tw = _text_size(line, scale)[0]
        layout.legend.append((line, (margin, y - th, margin + tw, y + base)))
    if colorbar:
        y = margin + len(lines) * line_h + th
        near_w, far_w = _text_size("near", scale)[0], _text_size("far", scale)[0]
        bar_w = min(int(200 * scale), width - near_w - far_w - 4 * margin)
        cv2.putText(band, "near", (margin, y), _FONT, scale, _WHITE, thick, cv2.LINE_AA)
        layout.legend.append(("near", (margin, y - th, margin + near_w, y + base)))
        if bar_w > 4:
            x = 2 * margin + near_w
            ramp = np.linspace(235, 35, bar_w).astype(np.uint8)[None].repeat(th, axis=0)
            band[y - th : y, x : x + bar_w] = cv2.applyColorMap(ramp, cv2.COLORMAP_TURBO)[..., ::-1]
            fx = x + bar_w + margin
            cv2.putText(band, "far", (fx, y), _FONT, scale, _WHITE, thick, cv2.LINE_AA)
            layout.legend.append(("far", (fx, y - th, fx + far_w, y + base)))
    return band


def _prepare(
    image: np.ndarray, result: OrderResult, min_side: int, layout: Layout | None
) -> tuple[np.ndarray, list[np.ndarray], int, float, Layout]:
    """Canvas (enlarged copy), the things' masks at canvas size, factor, font scale, layout."""
    factor = _factor(image, min_side)
    canvas = _enlarge(image, factor).copy()
    masks = [_enlarge(seg.mask, factor) for seg in result.segments]
    layout = Layout() if layout is None else layout
    layout.size, layout.factor = (canvas.shape[0], canvas.shape[1]), factor
    return canvas, masks, factor, _scale(canvas.shape), layout


# -- pictures -----------------------------------------------------------------------------------
def draw_panoptic(
    image: np.ndarray,
    result: OrderResult,
    alpha: float = 0.55,
    *,
    min_side: int = MIN_SIDE,
    layout: Layout | None = None,
) -> np.ndarray:
    """Panoptic overlay: stuff in muted colours (named when large), things in
    :func:`instance_colors` with a contour and the label ``#id class score``.

    Args:
        image: ``uint8[H, W, 3]`` RGB, the image the result was computed on.
        result: its prediction.
        alpha: opacity of the segment colours.
        min_side: images with a shorter short side are drawn enlarged (0: never).
        layout: filled with the placed labels (tests, interactive viewers).

    Returns:
        ``uint8[f H, f W, 3]`` RGB.
    """
    out, masks, factor, scale, layout = _prepare(image, result, min_side, layout)
    placer = _Placer(out.shape[0], out.shape[1], layout)
    stuff_masks = [_enlarge(seg.mask, factor) for seg in result.stuff_segments]
    for seg, mask in zip(result.stuff_segments, stuff_masks, strict=True):
        _blend(out, mask, _stuff_color(seg.category_id), alpha * 0.8)
    colors = instance_colors(len(result.segments))
    for mask, color in zip(masks, colors, strict=True):
        _blend(out, mask, color, alpha)
        _contour(out, mask, _WHITE, scale)
    # largest things first: they get the room next to their centre
    for i in sorted(range(len(masks)), key=lambda i: -result.segments[i].area):
        seg = result.segments[i]
        texts = [f"#{seg.id} {seg.class_name}", f"#{seg.id}"]
        if seg.score is not None:
            texts.insert(0, f"#{seg.id} {seg.class_name} {seg.score:.2f}")
        placer.label(out, texts, anchor_point(masks[i]), scale, colors[i], mask=masks[i])
    for seg, mask in zip(result.stuff_segments, stuff_masks, strict=True):
        if seg.area > 0.02 * seg.mask.size:
            placer.label(out, [seg.class_name], anchor_point(mask), scale * 0.8, (60, 60, 60))
    return out


def _occlusion_edges(result: OrderResult, max_arrows: int | None) -> tuple[list, int]:
    """The occlusion pairs ``(i, j)`` to draw (most probable first) and the number of pairs."""
    k = len(result.segments)
    occlusion = result.occlusion
    edges = [(i, j) for i in range(k) for j in range(k) if i != j and occlusion[i, j] == OCCLUDING]
    if result.occlusion_prob is not None:
        edges.sort(key=lambda e: -float(result.occlusion_prob[e]))
    total = len(edges)
    return (edges if max_arrows is None else edges[:max_arrows]), total


def _arrow(
    image: np.ndarray,
    start: tuple[int, int],
    end: tuple[int, int],
    color: Color,
    scale: float,
    margin_start: float,
    margin_end: float,
) -> None:
    """Arrow from ``start`` to ``end``, its ends pulled in by the nodes' radii."""
    dx, dy = end[0] - start[0], end[1] - start[1]
    length = math.hypot(dx, dy)
    if length <= margin_start + margin_end + 2:
        return
    ux, uy = dx / length, dy / length
    p0 = (int(start[0] + ux * margin_start), int(start[1] + uy * margin_start))
    p1 = (int(end[0] - ux * margin_end), int(end[1] - uy * margin_end))
    tip = min(0.4, 16.0 * scale / max(1.0, length - margin_start - margin_end))
    thick = _thickness(scale) + 1
    cv2.arrowedLine(image, p0, p1, _BLACK, thick + 2, cv2.LINE_AA, tipLength=tip)
    cv2.arrowedLine(image, p0, p1, color, thick, cv2.LINE_AA, tipLength=tip)


def _side_line(
    start: tuple[int, int], end: tuple[int, int], shift: float
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The segment ``start -> end`` moved ``shift`` pixels to its right (image coordinates)."""
    dx, dy = end[0] - start[0], end[1] - start[1]
    length = max(1.0, math.hypot(dx, dy))
    ox, oy = -dy / length * shift, dx / length * shift
    return (int(start[0] + ox), int(start[1] + oy)), (int(end[0] + ox), int(end[1] + oy))


def _paint_node(
    image: np.ndarray, segment_id: int, center: tuple[int, int], radius: int, color: Color,
    scale: float,
) -> None:  # fmt: skip
    """Draw again a node placed by :meth:`_Placer.node` (on top of arrows drawn since)."""
    cv2.circle(image, center, radius, color, -1, cv2.LINE_AA)
    cv2.circle(image, center, radius, _WHITE, max(1, _thickness(scale) - 1), cv2.LINE_AA)
    tw, th, _, _ = _text_size(str(segment_id), scale)
    cv2.putText(
        image, str(segment_id), (center[0] - tw // 2, center[1] + th // 2), _FONT, scale,
        _text_color(color), _thickness(scale), cv2.LINE_AA,
    )  # fmt: skip


def draw_occlusion(
    image: np.ndarray,
    result: OrderResult,
    max_arrows: int | None = MAX_ARROWS,
    *,
    min_side: int = MIN_SIDE,
    layout: Layout | None = None,
) -> np.ndarray:
    """Occlusion graph over the image: a node ``id`` per thing and an arrow ``#a -> #b`` for
    each ``occlusion[i, j] = 1`` (coloured as the occluder; mutual occlusion gives two arrows
    side by side), labelled with its probability where there is room.

    Args:
        max_arrows: draw the ``max_arrows`` pairs of highest ``occlusion_prob`` (None: all);
            the legend says how many of how many are shown.
        min_side, layout: as in :func:`draw_panoptic`.

    Returns:
        ``uint8[f H + band, f W, 3]`` RGB, with a legend band under the image.

    Raises:
        ValueError: the result has no occlusion matrix.
    """
    if result.occlusion is None:
        raise ValueError("the result has no occlusion matrix (the model's task has no occlusion)")
    canvas, masks, _, scale, layout = _prepare(image, result, min_side, layout)
    out = _dimmed(canvas)
    colors = instance_colors(len(result.segments))
    for mask, color in zip(masks, colors, strict=True):
        _blend(out, mask, color, 0.35)
        _contour(out, mask, color, scale)
    edges, total = _occlusion_edges(result, max_arrows)
    # nodes are placed first (arrows run between them), drawn again on top of the arrows
    placer = _Placer(out.shape[0], out.shape[1], layout)
    scratch = out.copy()
    centers, radii = [], []
    for seg, mask, color in zip(result.segments, masks, colors, strict=True):
        centers.append(placer.node(scratch, seg.id, anchor_point(mask), color, scale, mask))
        radii.append(layout.nodes[-1][2])
    shift = 2 * _thickness(scale)
    for i, j in edges:
        start, end = centers[i], centers[j]
        if result.occlusion[j, i] == OCCLUDING:  # mutual: side by side
            start, end = _side_line(start, end, shift)
        _arrow(out, start, end, colors[i], scale, radii[i] + 2, radii[j] + 2)
        layout.arrows.append((result.segments[i].id, result.segments[j].id))
    for (segment_id, center, radius), color in zip(list(layout.nodes), colors, strict=True):
        _paint_node(out, segment_id, center, radius, color, scale)
    if result.occlusion_prob is not None:
        for i, j in edges:
            (x0, y0), (x1, y1) = centers[i], centers[j]
            at = 0.5 if result.occlusion[j, i] != 1 else 0.35
            mid = (int(x0 + at * (x1 - x0)), int(y0 + at * (y1 - y0)))
            text = f"{result.occlusion_prob[i, j]:.2f}"
            placer.label(out, [text], mid, scale * 0.7, colors[i])
    if total == 0:
        shown = "no pair"
    elif len(edges) == total:
        shown = f"all {total} pairs"
    else:
        shown = f"the {len(edges)} most likely of {total} pairs"
    texts = [f"occlusion: arrow #a -> #b means a occludes b ({shown})"]
    legend = _legend(out.shape[1], texts, scale, layout)
    return np.concatenate([out, legend], axis=0)


def _rank_colors(k: int) -> list[Color]:
    """RGB colour per rank position (0 = closest: warm) from the turbo colormap."""
    if k == 0:
        return []
    values = np.linspace(235, 35, k) if k > 1 else np.array([235.0])
    lut = cv2.applyColorMap(values.astype(np.uint8).reshape(-1, 1), cv2.COLORMAP_TURBO)
    return [tuple(int(c) for c in bgr[0][::-1]) for bgr in lut]


def _depth_layer(
    out: np.ndarray,
    result: OrderResult,
    masks: Sequence[np.ndarray],
    scale: float,
    alpha: float,
    placer: _Placer,
    rank_labels: bool,
) -> None:
    rank = result.depth_rank or []
    colors = _rank_colors(len(rank))
    # Paint from back to front so that contours of closer instances stay on top.
    for index in reversed(result.depth_ranking or []):
        _blend(out, masks[index], colors[rank[index]], alpha)
        _contour(out, masks[index], _WHITE, scale)
    nodes = []
    for index in result.depth_ranking or []:  # closest first: they get the best places
        seg = result.segments[index]
        color = colors[rank[index]]
        center = placer.node(out, seg.id, anchor_point(masks[index]), color, scale, masks[index])
        nodes.append((index, center, placer.layout.nodes[-1][2]))
    if rank_labels:
        for index, center, radius in nodes:
            r, color = rank[index] + 1, colors[rank[index]]
            placer.label(out, [f"rank {r}", f"r{r}"], center, scale * 0.75, color, around=radius)


def draw_depth(
    image: np.ndarray,
    result: OrderResult,
    *,
    min_side: int = MIN_SIDE,
    layout: Layout | None = None,
) -> np.ndarray:
    """Depth picture: things coloured by their depth rank (turbo colormap: red = closest, blue
    = farthest), each with its node ``id`` and the label ``rank r`` (1 = closest); the rest in
    grey.

    Args:
        min_side, layout: as in :func:`draw_panoptic`.

    Returns:
        ``uint8[f H + band, f W, 3]`` RGB, with a legend band and colour bar under the image.

    Raises:
        ValueError: the result has no depth matrix.
    """
    if result.depth_ranking is None:
        raise ValueError("the result has no depth matrix (the model's task has no depth)")
    canvas, masks, _, scale, layout = _prepare(image, result, min_side, layout)
    out = _dimmed(canvas, 0.6)
    placer = _Placer(out.shape[0], out.shape[1], layout)
    _depth_layer(out, result, masks, scale, 0.75, placer, rank_labels=True)
    texts = ["depth: node = segment #id, rank 1 = closest"]
    legend = _legend(out.shape[1], texts, scale, layout, colorbar=True)
    return np.concatenate([out, legend], axis=0)


def draw_video_frame(image: np.ndarray, result: OrderResult) -> np.ndarray:
    """One video frame: stuff in muted panoptic colours, things coloured by depth rank (or by
    instance when there is no depth task) with their segment id.

    Returns:
        ``uint8[H, W, 3]`` RGB (never enlarged: frames keep the video's size).
    """
    out, masks, _, scale, layout = _prepare(image, result, 0, None)
    placer = _Placer(out.shape[0], out.shape[1], layout)
    for seg in result.stuff_segments:
        _blend(out, seg.mask, _stuff_color(seg.category_id), 0.4)
    if result.depth_ranking is not None:
        _depth_layer(out, result, masks, scale, 0.6, placer, rank_labels=False)
        return out
    colors = instance_colors(len(result.segments))
    for seg, mask, color in zip(result.segments, masks, colors, strict=True):
        _blend(out, mask, color, 0.55)
        _contour(out, mask, _WHITE, scale)
        placer.node(out, seg.id, anchor_point(mask), color, scale, mask)
    return out


# -- interactive views (demo/app.py): one selected thing, depth layers, the occlusion graph --
# Relation of another thing j to the selected thing i, in the words of the pictures and tables.
OCCLUDES_SELECTED = "occludes it"  # occlusion[j, i] = 1
OCCLUDED_BY_SELECTED = "occluded by it"  # occlusion[i, j] = 1
MUTUAL_OCCLUSION = f"{OCCLUDES_SELECTED} / {OCCLUDED_BY_SELECTED}"  # both
CLOSER = "closer"  # depth[j, i] = 1: j is closer than i
FARTHER = "farther"  # depth[j, i] = 0: j is farther than i
SAME_DEPTH = "same depth"  # depth[j, i] = 2
RELATION_COLORS: dict[str, Color] = {  # RGB per relation
    OCCLUDES_SELECTED: (235, 64, 52),
    OCCLUDED_BY_SELECTED: (52, 120, 235),
    MUTUAL_OCCLUSION: (170, 70, 210),
    CLOSER: (245, 150, 30),
    FARTHER: (40, 190, 180),
    SAME_DEPTH: (235, 220, 60),
}
_SELECTED_COLOR: Color = (255, 255, 255)


def drawing_factor(image: np.ndarray, min_side: int = MIN_SIDE) -> int:
    """The factor f by which the ``draw_*`` functions enlarge ``image`` for ``min_side``: a
    picture's pixel ``(x, y)`` is the image's ``(x // f, y // f)``."""
    return _factor(image, min_side)


def draw_relations(
    image: np.ndarray,
    result: OrderResult,
    index: int,
    kinds: dict[int, tuple[str, float]],
    *,
    min_side: int = MIN_SIDE,
    layout: Layout | None = None,
) -> np.ndarray:
    """Thing ``index`` outlined in white, every other thing of ``kinds`` coloured by its
    relation to it (:data:`RELATION_COLORS`) and labelled ``#id p``; the rest dimmed.

    Args:
        image: ``uint8[H, W, 3]`` RGB, the image the result was computed on.
        result: its prediction.
        index: row of the selected thing.
        kinds: row of another thing -> (relation, probability); rows left out stay grey.
        min_side, layout: as in :func:`draw_panoptic`.

    Returns:
        ``uint8[f H + band, f W, 3]`` RGB with a legend band (the relations and their counts).
    """
    canvas, masks, _, scale, layout = _prepare(image, result, min_side, layout)
    out = _dimmed(canvas, 0.55)
    selected = result.segments[index]
    _blend(out, masks[index], _SELECTED_COLOR, 0.35)
    for other, (kind, _) in kinds.items():
        _blend(out, masks[other], RELATION_COLORS[kind], 0.7)
        _contour(out, masks[other], _WHITE, scale)
    _contour(out, masks[index], _SELECTED_COLOR, 2 * scale)
    placer = _Placer(out.shape[0], out.shape[1], layout)
    placer.label(out, [f"#{selected.id}"], anchor_point(masks[index]), scale, _SELECTED_COLOR)
    for other, (kind, probability) in kinds.items():
        seg = result.segments[other]
        texts = [f"#{seg.id} {probability:.2f}", f"#{seg.id}"]
        color = RELATION_COLORS[kind]
        placer.label(out, texts, anchor_point(masks[other]), scale, color, mask=masks[other])
    texts = [f"selected: #{selected.id} {selected.class_name} (white)"]
    for kind in RELATION_COLORS:
        count = sum(1 for k, _ in kinds.values() if k == kind)
        texts += [f"{kind}: {count}"] if count else []
    return np.concatenate([out, _legend(out.shape[1], texts, scale, layout)], axis=0)


def draw_depth_layers(
    image: np.ndarray,
    result: OrderResult,
    step: int,
    *,
    min_side: int = MIN_SIDE,
    layout: Layout | None = None,
) -> np.ndarray:
    """The ``step`` closest things of the depth ranking in their rank colours (labelled
    ``#id rank r``), everything else dimmed: moving ``step`` from 0 to k reveals the scene
    from the front to the back.

    Returns:
        ``uint8[f H + band, f W, 3]`` RGB with a legend band.

    Raises:
        ValueError: the result has no depth ranking.
    """
    if result.depth_ranking is None:
        raise ValueError("the result has no depth ranking (the model's task has no depth)")
    canvas, masks, _, scale, layout = _prepare(image, result, min_side, layout)
    k = len(result.depth_ranking)
    step = int(np.clip(step, 0, k))
    out = _dimmed(canvas, 0.4)
    colors = _rank_colors(k)
    shown = result.depth_ranking[:step]
    for position in reversed(range(step)):  # back to front: closer contours stay on top
        mask = masks[shown[position]]
        np.copyto(out, canvas, where=mask[..., None])
        _blend(out, mask, colors[position], 0.45)
        _contour(out, mask, _WHITE, scale)
    placer = _Placer(out.shape[0], out.shape[1], layout)
    for position, index in enumerate(shown):
        seg_id = result.segments[index].id
        texts = [f"#{seg_id} rank {position + 1}", f"#{seg_id}"]
        placer.label(out, texts, anchor_point(masks[index]), scale, colors[position])
    texts = [f"depth layers: the {step} closest of {k} thing(s)"]
    return np.concatenate([out, _legend(out.shape[1], texts, scale, layout)], axis=0)


def draw_occlusion_graph(
    result: OrderResult, size: int = 480, *, layout: Layout | None = None
) -> np.ndarray:
    """The occlusion graph on its own: one node per thing (its segment id, in its instance
    colour) on a circle, closest first clockwise from the top when the depth ranking is known,
    and an arrow ``#a -> #b`` for every ``occlusion[a, b] = 1`` (all pairs).

    Returns:
        ``uint8[size + band, size, 3]`` RGB.

    Raises:
        ValueError: the result has no occlusion matrix.
    """
    if result.occlusion is None:
        raise ValueError("the result has no occlusion matrix (the model's task has no occlusion)")
    layout = Layout() if layout is None else layout
    layout.size = (size, size)
    out = np.full((size, size, 3), 24, np.uint8)
    k = len(result.segments)
    scale = _scale(out.shape)
    order = result.depth_ranking if result.depth_ranking is not None else list(range(k))
    radius = size * 0.38
    points = {}
    for position, index in enumerate(order):
        angle = 2 * math.pi * position / max(1, k) - math.pi / 2
        points[index] = (
            int(size / 2 + radius * math.cos(angle)),
            int(size / 2 + radius * math.sin(angle)),
        )
    colors = instance_colors(k)
    scratch = out.copy()  # nodes placed first (arrows end at their rims), drawn last on top
    placer = _Placer(size, size, layout)
    centers = {i: placer.node(scratch, result.segments[i].id, p, colors[i], scale)
               for i, p in points.items()}  # fmt: skip
    radii = {i: r for i, (_, _, r) in zip(points, layout.nodes, strict=True)}
    edges, total = _occlusion_edges(result, None)
    for a, b in edges:
        start, end = centers[a], centers[b]
        if result.occlusion[b, a] == OCCLUDING:
            start, end = _side_line(start, end, 2 * _thickness(scale))
        _arrow(out, start, end, colors[a], scale, radii[a] + 2, radii[b] + 2)
        layout.arrows.append((result.segments[a].id, result.segments[b].id))
    for i in points:
        _paint_node(out, result.segments[i].id, centers[i], radii[i], colors[i], scale)
    texts = [f"arrow #a -> #b: a occludes b ({total} pairs)"]
    return np.concatenate([out, _legend(size, texts, scale, layout)], axis=0)
