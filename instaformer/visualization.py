"""Pictures of an :class:`~instaformer.predictor.OrderResult` (OpenCV/NumPy drawing only).

Shape shorthand: H x W the image; k thing segments. Every function takes and returns an RGB
``uint8[H, W, 3]`` array (pictures with a legend band are taller: ``[H + band, W, 3]``).
Thing segment ``i`` is drawn with the same colour and the label ``#i`` in every picture, ``i``
being its row in the order matrices.

* :func:`draw_panoptic`: segments overlaid on the image; things carry ``#i class`` (and the
  score on images of at least 480 px).
* :func:`draw_occlusion`: arrows from occluder to occluded between the segments' anchor points
  (a double-headed arrow for mutual occlusion).
* :func:`draw_depth`: things coloured from front (warm) to back (cool) with their depth rank
  (1 = closest); stuff is shown in grey.
"""

from __future__ import annotations

import colorsys
import math

import cv2
import numpy as np

from instaformer.predictor import OrderResult, Segment

__all__ = [
    "draw_depth",
    "draw_occlusion",
    "draw_panoptic",
    "draw_video_frame",
    "instance_colors",
    "anchor_point",
]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)
_DETAIL_SIZE = 480  # short side (pixels) from which scores and edge probabilities are written


def instance_colors(k: int) -> list[tuple[int, int, int]]:
    """k well-separated saturated RGB colours (golden-ratio hue steps), the same for any image."""
    colors = []
    for i in range(k):
        hue = (0.08 + i * 0.618034) % 1.0
        value = 0.95 if i % 2 == 0 else 0.8
        r, g, b = colorsys.hsv_to_rgb(hue, 0.75, value)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors


def _stuff_color(category_id: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((category_id * 0.137) % 1.0, 0.35, 0.75)
    return int(r * 255), int(g * 255), int(b * 255)


def anchor_point(mask: np.ndarray) -> tuple[int, int]:
    """``(x, y)`` of the mask pixel farthest from the mask border (inside even for rings)."""
    if not mask.any():
        return 0, 0
    padded = np.pad(mask.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 3)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x) - 1, int(y) - 1


def _scale(image: np.ndarray) -> float:
    """Font scale proportional to the image size (legible from 256 to 1024+ px)."""
    return max(0.4, min(image.shape[0], image.shape[1]) / 900.0)


def _thickness(scale: float) -> int:
    return max(1, int(round(scale * 2)))


def _text(
    image: np.ndarray,
    text: str,
    center: tuple[int, int],
    scale: float,
    background: tuple[int, int, int] = _BLACK,
    foreground: tuple[int, int, int] = _WHITE,
) -> None:
    """Text centred on ``center`` on a filled box, kept inside the image (in place)."""
    thick = _thickness(scale)
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, thick)
    pad = max(2, thick + 1)
    h, w = image.shape[:2]
    x0 = int(np.clip(center[0] - tw // 2 - pad, 0, max(0, w - tw - 2 * pad)))
    y0 = int(np.clip(center[1] - th // 2 - pad, 0, max(0, h - th - base - 2 * pad)))
    cv2.rectangle(image, (x0, y0), (x0 + tw + 2 * pad, y0 + th + base + 2 * pad), background, -1)
    cv2.putText(
        image, text, (x0 + pad, y0 + pad + th), _FONT, scale, foreground, thick, cv2.LINE_AA
    )


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return _BLACK if luminance > 150 else _WHITE


def _blend(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int], alpha: float) -> None:
    image[mask] = (image[mask] * (1.0 - alpha) + np.array(color) * alpha).astype(np.uint8)


def _contour(
    image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int], scale: float
) -> None:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(image, contours, -1, color, max(1, _thickness(scale) - 1), cv2.LINE_AA)


def _legend(image: np.ndarray, lines: list[str]) -> np.ndarray:
    """Append a dark band with one line of text per entry under the picture."""
    scale = _scale(image) * 0.9
    thick = _thickness(scale)
    (_, th), base = cv2.getTextSize("Ag", _FONT, scale, thick)
    line_h = th + base + 6
    band = np.full((line_h * len(lines) + 6, image.shape[1], 3), 32, np.uint8)
    for i, line in enumerate(lines):
        y = 4 + i * line_h + th
        cv2.putText(band, line, (6, y), _FONT, scale, _WHITE, thick, cv2.LINE_AA)
    return np.concatenate([image, band], axis=0)


def draw_panoptic(image: np.ndarray, result: OrderResult, alpha: float = 0.55) -> np.ndarray:
    """Panoptic overlay: stuff in muted colours, things in :func:`instance_colors` with a
    contour and the label ``#i class score``.

    Args:
        image: ``uint8[H, W, 3]`` RGB, the image the result was computed on.
        result: its prediction.
        alpha: opacity of the segment colours.

    Returns:
        ``uint8[H, W, 3]`` RGB.
    """
    out = image.copy()
    scale = _scale(image)
    detailed = min(image.shape[:2]) >= _DETAIL_SIZE
    for seg in result.stuff_segments:
        _blend(out, seg.mask, _stuff_color(seg.category_id), alpha * 0.8)
    colors = instance_colors(len(result.segments))
    for seg, color in zip(result.segments, colors, strict=True):
        _blend(out, seg.mask, color, alpha)
        _contour(out, seg.mask, _WHITE, scale)
    for seg in result.stuff_segments:
        if seg.area > 0.02 * seg.mask.size:
            _text(out, seg.class_name, anchor_point(seg.mask), scale * 0.8, (60, 60, 60))
    for i, (seg, color) in enumerate(zip(result.segments, colors, strict=True)):
        label = f"#{i} {seg.class_name}" + (
            f" {seg.score:.2f}" if detailed and seg.score is not None else ""
        )
        _text(out, label, anchor_point(seg.mask), scale, color, _text_color(color))
    return out


def _dimmed(image: np.ndarray, factor: float = 0.45) -> np.ndarray:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return (np.repeat(grey[:, :, None], 3, axis=2) * factor).astype(np.uint8)


def _node(image: np.ndarray, text: str, center: tuple[int, int], color, scale: float) -> None:
    thick = _thickness(scale)
    (tw, th), _ = cv2.getTextSize(text, _FONT, scale, thick)
    radius = int(max(tw, th) * 0.75) + 3
    cv2.circle(image, center, radius, color, -1, cv2.LINE_AA)
    cv2.circle(image, center, radius, _WHITE, max(1, thick - 1), cv2.LINE_AA)
    origin = (center[0] - tw // 2, center[1] + th // 2)
    cv2.putText(image, text, origin, _FONT, scale, _text_color(color), thick, cv2.LINE_AA)


def _arrow(
    image: np.ndarray,
    start: tuple[int, int],
    end: tuple[int, int],
    color: tuple[int, int, int],
    scale: float,
    margin: float,
) -> None:
    """Arrow from ``start`` to ``end``, both ends pulled in by ``margin`` pixels."""
    dx, dy = end[0] - start[0], end[1] - start[1]
    length = math.hypot(dx, dy)
    if length <= 2 * margin + 1:
        return
    ux, uy = dx / length, dy / length
    p0 = (int(start[0] + ux * margin), int(start[1] + uy * margin))
    p1 = (int(end[0] - ux * margin), int(end[1] - uy * margin))
    tip = min(0.35, 14.0 * scale / max(1.0, length - 2 * margin))
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
    return (
        (int(start[0] + ox), int(start[1] + oy)),
        (int(end[0] + ox), int(end[1] + oy)),
    )


def draw_occlusion(image: np.ndarray, result: OrderResult, max_edge_labels: int = 12) -> np.ndarray:
    """Occlusion graph over the image: an arrow ``#i -> #j`` for every ``occlusion[i, j] = 1``
    (coloured as the occluder; mutual occlusion gives two arrows side by side).

    Edge labels give ``occlusion_prob[i, j]`` when there are at most ``max_edge_labels`` arrows
    and the image is at least ``_DETAIL_SIZE`` pixels on its short side.

    Returns:
        ``uint8[H + band, W, 3]`` RGB, with a legend band under the image.

    Raises:
        ValueError: the result has no occlusion matrix.
    """
    if result.occlusion is None:
        raise ValueError("the result has no occlusion matrix (the model's task has no occlusion)")
    out = _dimmed(image)
    scale = _scale(image)
    colors = instance_colors(len(result.segments))
    anchors = [anchor_point(seg.mask) for seg in result.segments]
    for seg, color in zip(result.segments, colors, strict=True):
        _blend(out, seg.mask, color, 0.35)
        _contour(out, seg.mask, color, scale)
    k = len(result.segments)
    edges = [(i, j) for i in range(k) for j in range(k) if i != j and result.occlusion[i, j] == 1]
    (tw, th), _ = cv2.getTextSize("00", _FONT, scale, _thickness(scale))
    margin = max(tw, th) * 0.75 + 6
    # Mutual occlusion: the two arrows run side by side, each label nearer its occluder.
    lines = {e: _side_line(anchors[e[0]], anchors[e[1]], 3 * _thickness(scale)) for e in edges}
    for (i, j), (start, end) in lines.items():
        if result.occlusion[j, i] != 1:
            start, end = anchors[i], anchors[j]
        _arrow(out, start, end, colors[i], scale, margin)
    detailed = min(image.shape[:2]) >= _DETAIL_SIZE and len(edges) <= max_edge_labels
    if result.occlusion_prob is not None and detailed:
        for i, j in edges:
            (x0, y0), (x1, y1) = lines[i, j]
            at = 0.5 if result.occlusion[j, i] != 1 else 0.35
            label = (int(x0 + at * (x1 - x0)), int(y0 + at * (y1 - y0)))
            _text(out, f"{result.occlusion_prob[i, j]:.2f}", label, scale * 0.7, colors[i])
    for i, (anchor, color) in enumerate(zip(anchors, colors, strict=True)):
        _node(out, str(i), anchor, color, scale)
    return _legend(out, [f"occlusion: arrow i -> j = #i occludes #j ({len(edges)} pairs)"])


def _rank_colors(k: int) -> list[tuple[int, int, int]]:
    """RGB colour per rank position (0 = closest: warm) from the turbo colormap."""
    if k == 0:
        return []
    values = np.linspace(235, 35, k) if k > 1 else np.array([235.0])
    lut = cv2.applyColorMap(values.astype(np.uint8).reshape(-1, 1), cv2.COLORMAP_TURBO)
    return [tuple(int(c) for c in bgr[0][::-1]) for bgr in lut]


def _colorbar(width: int, height: int) -> np.ndarray:
    ramp = np.linspace(235, 35, width).astype(np.uint8)[None].repeat(height, axis=0)
    return cv2.applyColorMap(ramp, cv2.COLORMAP_TURBO)[:, :, ::-1]


def _depth_layer(out: np.ndarray, result: OrderResult, scale: float, alpha: float) -> None:
    rank = result.depth_rank or []
    colors = _rank_colors(len(rank))
    # Paint from back to front so that contours of closer instances stay on top.
    for index in reversed(result.depth_ranking or []):
        seg: Segment = result.segments[index]
        _blend(out, seg.mask, colors[rank[index]], alpha)
        _contour(out, seg.mask, _WHITE, scale)
    for index, seg in enumerate(result.segments):
        _node(out, str(rank[index] + 1), anchor_point(seg.mask), colors[rank[index]], scale)


def draw_depth(image: np.ndarray, result: OrderResult) -> np.ndarray:
    """Depth picture: things coloured by their depth rank (turbo colormap: red = closest, blue
    = farthest) and labelled with the rank (1 = closest); the rest in grey.

    Returns:
        ``uint8[H + band, W, 3]`` RGB, with a legend band and colour bar under the image.

    Raises:
        ValueError: the result has no depth matrix.
    """
    if result.depth_ranking is None:
        raise ValueError("the result has no depth matrix (the model's task has no depth)")
    out = _dimmed(image, 0.6)
    scale = _scale(image)
    _depth_layer(out, result, scale, alpha=0.75)
    return np.concatenate([out, _depth_legend(out.shape[1], scale * 0.9)], axis=0)


def _depth_legend(width: int, scale: float) -> np.ndarray:
    """Band ``rank: 1 = closest   near [colour bar] far``."""
    thick = _thickness(scale)
    (_, th), base = cv2.getTextSize("Ag", _FONT, scale, thick)
    band = np.full((th + base + 12, width, 3), 32, np.uint8)
    y = 6 + th
    x = 6
    for text in ("rank: 1 = closest", "near"):
        cv2.putText(band, text, (x, y), _FONT, scale, _WHITE, thick, cv2.LINE_AA)
        x += cv2.getTextSize(text + "  ", _FONT, scale, thick)[0][0]
    (far_w, _), _ = cv2.getTextSize("far", _FONT, scale, thick)
    bar_w = min(int(160 * scale), width - x - far_w - 12)
    if bar_w > 10:
        band[6 : 6 + th, x : x + bar_w] = _colorbar(bar_w, th)
        cv2.putText(band, "far", (x + bar_w + 6, y), _FONT, scale, _WHITE, thick, cv2.LINE_AA)
    return band


def draw_video_frame(image: np.ndarray, result: OrderResult) -> np.ndarray:
    """One video frame: stuff in muted panoptic colours, things coloured by depth rank (or by
    instance when there is no depth task) with their rank / id.

    Returns:
        ``uint8[H, W, 3]`` RGB.
    """
    out = image.copy()
    scale = _scale(image)
    for seg in result.stuff_segments:
        _blend(out, seg.mask, _stuff_color(seg.category_id), 0.4)
    if result.depth_ranking is not None:
        _depth_layer(out, result, scale, alpha=0.6)
        return out
    colors = instance_colors(len(result.segments))
    for i, (seg, color) in enumerate(zip(result.segments, colors, strict=True)):
        _blend(out, seg.mask, color, 0.55)
        _contour(out, seg.mask, _WHITE, scale)
        _node(out, str(i), anchor_point(seg.mask), color, scale)
    return out
