"""The demo as a library: expand inputs, run the predictor, write pictures and JSON.

``demo/demo.py`` is a thin command line over :func:`expand_inputs`, :func:`run_on_paths` and
:func:`run_on_video`. Per image ``<stem>`` the output directory receives

* ``<stem>_panoptic.png``: :func:`~instaformer.visualization.draw_panoptic`;
* ``<stem>_occlusion.png`` (occlusion task): :func:`~instaformer.visualization.draw_occlusion`;
* ``<stem>_depth.png`` (depth task): :func:`~instaformer.visualization.draw_depth`;
* ``<stem>.json``: :meth:`~instaformer.predictor.OrderResult.to_json` plus the input path.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from instaformer.predictor import OrderResult, Predictor, load_image
from instaformer.visualization import (
    draw_depth,
    draw_occlusion,
    draw_panoptic,
    draw_video_frame,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "DemoReport",
    "expand_inputs",
    "render",
    "run_on_paths",
    "run_on_video",
    "save_result",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
"""File suffixes picked up when an input is a directory (case-insensitive)."""


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Turn ``--input`` items into a list of image paths, in order, without duplicates.

    Each item is a ``.txt`` file listing one path per line (blank lines and ``#`` comments
    skipped; relative paths are relative to the list file), a directory (its image files,
    sorted, not recursive), a glob pattern (sorted matches), or a path. Paths that do not exist
    are kept, so that the run reports them as failed inputs.

    Raises:
        ValueError: a glob pattern or a directory that matches no image.
    """
    paths: list[str] = []
    for item in inputs:
        if item.endswith(".txt") and os.path.isfile(item):
            root = Path(item).parent
            with open(item) as f:
                for line in f:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        paths.append(str(root / line) if not os.path.isabs(line) else line)
        elif os.path.isdir(item):
            found = sorted(
                str(p) for p in Path(item).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise ValueError(f"input directory {item} holds no image ({IMAGE_EXTENSIONS})")
            paths += found
        elif glob.has_magic(item):
            found = sorted(glob.glob(os.path.expanduser(item)))
            if not found:
                raise ValueError(f"input pattern {item} matches no file")
            paths += found
        else:
            paths.append(item)
    return list(dict.fromkeys(paths))


def render(image: np.ndarray, result: OrderResult) -> dict[str, np.ndarray]:
    """The pictures of one result: ``{"panoptic": ..., "occlusion": ..., "depth": ...}`` (RGB
    ``uint8``; occlusion/depth only for the model's tasks)."""
    pictures = {"panoptic": draw_panoptic(image, result)}
    if result.occlusion is not None:
        pictures["occlusion"] = draw_occlusion(image, result)
    if result.depth is not None:
        pictures["depth"] = draw_depth(image, result)
    return pictures


def result_record(
    result: OrderResult, source: str | None, include_masks: bool = False
) -> dict[str, Any]:
    """The JSON record of one image: ``{"input": source, **result.to_dict(include_masks)}``."""
    return {"input": source, **result.to_dict(include_masks)}


def _write_png(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1])):
        raise OSError(f"cannot write {path}")


def save_result(
    image: np.ndarray,
    result: OrderResult,
    output_dir: str | os.PathLike,
    stem: str,
    source: str | None = None,
    include_masks: bool = False,
) -> list[Path]:
    """Write the pictures and ``<stem>.json`` of one result into ``output_dir`` (created).

    Returns:
        The written paths.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, picture in render(image, result).items():
        path = out / f"{stem}_{name}.png"
        _write_png(path, picture)
        written.append(path)
    path = out / f"{stem}.json"
    path.write_text(json.dumps(result_record(result, source, include_masks)))
    written.append(path)
    return written


@dataclass
class DemoReport:
    """Outcome of :func:`run_on_paths`: written files per input, and failed inputs."""

    written: dict[str, list[Path]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def _unique_stems(paths: Sequence[str]) -> list[str]:
    """File stems, suffixed ``_1``, ``_2``, ... where two inputs share one."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        stem = Path(path).stem
        count = seen.get(stem, 0)
        seen[stem] = count + 1
        stems.append(stem if count == 0 else f"{stem}_{count}")
    return stems


def run_on_paths(
    predictor: Predictor,
    paths: Sequence[str],
    output_dir: str | os.PathLike,
    include_masks: bool = False,
    progress: bool = True,
) -> DemoReport:
    """Predict every image of ``paths`` and write its pictures and JSON into ``output_dir``.

    An input that cannot be read (missing, corrupt, not an image) is logged by name and
    skipped; the others are still processed. Errors of the model itself propagate.
    """
    report = DemoReport()
    stems = _unique_stems(paths)
    for path, stem in tqdm(
        list(zip(paths, stems, strict=True)), desc="images", unit="img", disable=not progress
    ):
        try:
            image = load_image(path)
        except (OSError, ValueError) as err:
            logger.error("skipping input %s: %s", path, err)
            report.failed[path] = str(err)
            continue
        result = predictor(image)
        report.written[path] = save_result(image, result, output_dir, stem, path, include_masks)
    return report


def _frames(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield frame[:, :, ::-1]  # BGR -> RGB


def annotate_frames(predictor: Predictor, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """RGB frames -> annotated RGB frames (:func:`~instaformer.visualization.draw_video_frame`)."""
    for frame in frames:
        frame = np.ascontiguousarray(frame)
        yield draw_video_frame(frame, predictor(frame))


def run_on_video(
    predictor: Predictor,
    source: str | int,
    output_path: str | os.PathLike | None,
    max_frames: int | None = None,
    show: bool = False,
) -> int:
    """Annotate a video file (``source`` a path) or a camera (``source`` an index).

    Writes an mp4 to ``output_path`` (parent created) and/or shows a window (``show``, needs an
    OpenCV build with GUI; Esc stops). Returns the number of frames processed.

    Raises:
        FileNotFoundError / ValueError: the source cannot be opened.
    """
    if isinstance(source, str) and not os.path.isfile(source):
        raise FileNotFoundError(f"video file not found: {source}")
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise ValueError(f"cannot open video source {source!r}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if isinstance(source, str) else 0
    if max_frames is not None:
        total = min(total, max_frames) if total > 0 else max_frames
    writer = None
    count = 0
    try:
        frames = _frames(capture)
        bar = tqdm(annotate_frames(predictor, frames), total=total or None, unit="frame")
        for annotated in bar:
            bgr = np.ascontiguousarray(annotated[:, :, ::-1])
            if output_path is not None:
                if writer is None:
                    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
                    writer = cv2.VideoWriter(
                        str(output_path),
                        cv2.VideoWriter_fourcc(*"mp4v"),
                        fps if fps > 0 else 30.0,
                        (bgr.shape[1], bgr.shape[0]),
                    )
                    if not writer.isOpened():
                        raise OSError(f"cannot write video {output_path}")
                writer.write(bgr)
            if show:
                cv2.imshow("InstaFormer", bgr)
                if cv2.waitKey(1) == 27:
                    break
            count += 1
            if max_frames is not None and count >= max_frames:
                break
    finally:
        capture.release()
        if writer is not None:
            writer.release()
        if show:
            cv2.destroyAllWindows()
    return count


def opencv_has_gui() -> bool:
    """Whether this OpenCV build can open windows (headless wheels cannot)."""
    info = cv2.getBuildInformation()
    gui = next((line for line in info.splitlines() if line.strip().startswith("GUI:")), "")
    return bool(gui) and "NONE" not in gui
