"""The demo as a library: expand inputs, run the predictor, write pictures and JSON.

``demo/demo.py`` is a thin command line over :func:`expand_inputs`, :func:`run_on_paths` and
:func:`run_on_video`. Per image ``<stem>`` the output directory receives

* ``<stem>_panoptic.png``: :func:`~instaformer.apps.visualization.draw_panoptic`;
* ``<stem>_occlusion.png`` (occlusion task): :func:`~instaformer.apps.visualization.draw_occlusion`;
* ``<stem>_depth.png`` (depth task): :func:`~instaformer.apps.visualization.draw_depth`;
* ``<stem>.json``: :meth:`~instaformer.structures.OrderResult.to_json` plus the input path.

Safety of the files (so that ``--input D --output D`` is safe):

* every file is written atomically (a temporary file in the output directory, then renamed);
* an output never replaces an input of the run, another input's output, a symbolic link or a
  file the demo did not write: such a stem gets the first free suffix ``_1``, ``_2``, ...;
* the demo's PNGs carry a ``instaformer-demo`` text chunk and its JSON a ``"producer"`` key,
  so that directories and patterns given as inputs skip earlier outputs;
* one run at a time per output directory (:class:`mask2former.utils.outputs.OutputFolder`
  holds its lock while the run writes): a second run into it is refused naming the first
  one's pid and host, so two runs never both report success with one run's files lost. An
  empty ``--output`` is refused; a video is written only over a video the demo wrote
  (mask2former/utils/outputs.py).
"""

from __future__ import annotations

import gc
import glob
import json
import logging
import os
import uuid
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError
from tqdm import tqdm

from instaformer.apps.visualization import (
    draw_depth,
    draw_occlusion,
    draw_panoptic,
    draw_video_frame,
)
from instaformer.data.io import DataError
from instaformer.predictor import Predictor, load_image
from instaformer.structures import OrderResult
from mask2former.utils.atomic import atomic_write
from mask2former.utils.outputs import OutputFolder

__all__ = [
    "IMAGE_EXTENSIONS",
    "PRODUCER",
    "DemoInputError",
    "DemoReport",
    "expand_inputs",
    "is_demo_output",
    "output_names",
    "plan_stems",
    "render",
    "run_on_paths",
    "run_on_video",
    "save_result",
    "video_output_path",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
"""File suffixes picked up when an input is a directory (case-insensitive)."""
PRODUCER = "instaformer-demo"
"""PNG text-chunk key and JSON ``"producer"`` value that mark the demo's own outputs."""


class DemoInputError(DataError):
    """An input of the demo (pattern, directory, video, camera) cannot be used; the message
    names it (a user error: the command line prints it in one line, exit status 2)."""


def is_demo_output(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a PNG or JSON file written by the demo (read from its header/keys)."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    suffix = path.suffix.lower()
    try:
        if suffix == ".png":
            with warnings.catch_warnings():  # header only: PIL's size warning is moot
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    return PRODUCER in image.info  # text chunks before the pixels: no decoding
        if suffix == ".json":
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
            return isinstance(record, dict) and record.get("producer") == PRODUCER
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False
    return False


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Turn ``--input`` items into a list of image paths, in order, without duplicates.

    Each item is a ``.txt`` file listing one path per line (blank lines and ``#`` comments
    skipped; relative paths are relative to the list file), a directory (its image files,
    sorted, not recursive), a glob pattern (sorted matches), or a path. Paths that do not exist
    are kept, so that the run reports them as failed inputs. Directories and patterns skip the
    demo's own earlier outputs (:func:`is_demo_output`); the number skipped is logged.

    Raises:
        DemoInputError: a glob pattern or a directory that matches no image.
    """
    paths: list[str] = []
    skipped = 0
    for item in inputs:
        if item.endswith(".txt") and os.path.isfile(item):
            root = Path(item).parent
            with open(item) as f:
                for line in f:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        paths.append(str(root / line) if not os.path.isabs(line) else line)
            continue
        if os.path.isdir(item):
            found = sorted(
                str(p) for p in Path(item).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise DemoInputError(f"input directory {item} holds no image ({IMAGE_EXTENSIONS})")
        elif glob.has_magic(item):
            found = sorted(glob.glob(os.path.expanduser(item)))
            if not found:
                raise DemoInputError(f"input pattern {item} matches no file")
        else:
            paths.append(item)
            continue
        kept = [p for p in found if not is_demo_output(p)]
        if not kept:
            raise DemoInputError(f"input {item} holds only earlier outputs of the demo")
        skipped += len(found) - len(kept)
        paths += kept
    if skipped:
        logger.info("skipped %d earlier output(s) of the demo found among the inputs", skipped)
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
    """The JSON record the demo writes for one image: who wrote it, the input and
    :meth:`OrderResult.to_dict`."""
    return {"producer": PRODUCER, "input": source, **result.to_dict(include_masks)}


def _write_png(path: Path, rgb: np.ndarray, source: str | None) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text(PRODUCER, Path(source).name if source else "")
    picture = Image.fromarray(np.ascontiguousarray(rgb))
    atomic_write(path, lambda f: picture.save(f, format="PNG", pnginfo=info, compress_level=3))


def output_names(stem: str, pictures: Sequence[str]) -> list[str]:
    """File names the demo writes for ``stem``: one PNG per picture, then the JSON."""
    return [f"{stem}_{name}.png" for name in pictures] + [f"{stem}.json"]


def save_result(
    image: np.ndarray,
    result: OrderResult,
    output_dir: str | os.PathLike,
    stem: str,
    source: str | None = None,
    include_masks: bool = False,
    written: list[Path] | None = None,
) -> list[Path]:
    """Write the pictures and ``<stem>.json`` of one result into ``output_dir`` (created), each
    file atomically. Existing files of those names are replaced: choose ``stem`` with
    :func:`plan_stems` to protect other files.

    Args:
        written: a list the written paths are appended to as they are written (so that a
            caller knows what exists after a failure part-way).
    Returns:
        The written paths.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [] if written is None else written
    pictures = render(image, result)
    names = output_names(stem, list(pictures))
    for path, picture in zip((out / n for n in names), pictures.values(), strict=False):
        _write_png(path, picture, source)
        written.append(path)
    payload = json.dumps(result_record(result, source, include_masks)).encode("utf-8")
    atomic_write(out / names[-1], lambda f: f.write(payload))
    written.append(out / names[-1])
    return written


@dataclass
class DemoReport:
    """Outcome of :func:`run_on_paths`: written files per input, and failed inputs (with the
    reason). An input that failed part-way may have some written files."""

    written: dict[str, list[Path]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def num_files(self) -> int:
        return sum(len(paths) for paths in self.written.values())


def _key(path: str | os.PathLike) -> str:
    """Comparison key of a path: resolved, case-folded (safe on case-insensitive systems)."""
    return os.path.realpath(path).casefold()


def plan_stems(
    paths: Sequence[str], output_dir: str | os.PathLike, pictures: Sequence[str]
) -> list[str]:
    """One output stem per input such that no output of the run replaces an input, another
    input's output, a link or a file the demo did not write.

    Inputs keep their file stem where it is free (earlier inputs first); the others get the
    first free ``<stem>_1``, ``<stem>_2``, ... Names are compared case-insensitively.

    Args:
        pictures: the picture names written per input (see :func:`output_names`).
    """
    out = Path(output_dir)
    protected = {_key(p) for p in paths}
    reserved: set[str] = set()

    def free(stem: str) -> bool:
        names = output_names(stem, pictures)
        for name in names:
            target = out / name
            if name.casefold() in reserved or _key(target) in protected:
                return False
            if (target.is_symlink() or target.exists()) and not is_demo_output(target):
                return False
        reserved.update(n.casefold() for n in names)
        return True

    stems: list[str | None] = []
    for path in paths:
        stem = Path(path).stem
        stems.append(stem if free(stem) else None)
    for i, path in enumerate(paths):
        if stems[i] is None:
            stem, n = Path(path).stem, 1
            while not free(f"{stem}_{n}"):
                n += 1
            stems[i] = f"{stem}_{n}"
    return [str(stem) for stem in stems]


_FAILURES = (OSError, ValueError, RuntimeError, MemoryError)
"""Errors that fail one image (unreadable input, model out of memory, disk full) and not the
batch."""


def run_on_paths(
    predictor: Predictor,
    paths: Sequence[str],
    output_dir: str | os.PathLike,
    include_masks: bool = False,
    progress: bool = True,
) -> DemoReport:
    """Predict every image of ``paths`` and write its pictures and JSON into ``output_dir``.

    Output stems come from :func:`plan_stems`. An image that fails (missing, corrupt or refused
    input, an error or out-of-memory of the model, a failed write) is logged by name with the
    reason and recorded in the report; the others are still processed.

    Raises:
        OutputError: ``output_dir`` is empty or not a folder.
        RunLockError: another run writes into ``output_dir``.
    """
    report = DemoReport()
    pictures = ["panoptic", *predictor.tasks]
    with OutputFolder(output_dir, what="--output", tool="demo"):
        stems = plan_stems(paths, output_dir, pictures)
        for path, stem in tqdm(
            list(zip(paths, stems, strict=True)), desc="images", unit="img", disable=not progress
        ):
            written: list[Path] = []
            try:
                image = load_image(path)
                result = predictor(image)
                save_result(image, result, output_dir, stem, path, include_masks, written)
            except _FAILURES as err:
                reason = str(err)
                if not isinstance(err, (OSError, ValueError)):  # the model's: name the error type
                    reason = f"{type(err).__name__}: {err}" if reason else type(err).__name__
                    gc.collect()  # free what the failed forward pass held before the next image
                logger.error("failed input %s: %s", path, reason)
                report.failed[path] = reason
            if written:
                report.written[path] = written
    return report


def _frames(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield frame[:, :, ::-1]  # BGR -> RGB


def annotate_frames(predictor: Predictor, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """RGB frames -> annotated RGB frames
    (:func:`~instaformer.apps.visualization.draw_video_frame`)."""
    for frame in frames:
        frame = np.ascontiguousarray(frame)
        yield draw_video_frame(frame, predictor(frame))


def video_output_path(output_dir: str | os.PathLike, source: str | int) -> Path:
    """``<output_dir>/<stem>_orders.mp4`` (``webcam_orders.mp4`` for a camera); a free
    ``_1``, ``_2``, ... suffix where that name is the input video itself."""
    stem = "webcam" if isinstance(source, int) else Path(source).stem
    path, n = Path(output_dir) / f"{stem}_orders.mp4", 0
    while isinstance(source, str) and _key(path) == _key(source):
        n += 1
        path = Path(output_dir) / f"{stem}_orders_{n}.mp4"
    return path


def _describe(source: str | int) -> str:
    return f"camera {source} (--webcam)" if isinstance(source, int) else f"video {source}"


def run_on_video(
    predictor: Predictor,
    source: str | int,
    output_path: str | os.PathLike | None,
    max_frames: int | None = None,
    show: bool = False,
) -> int:
    """Annotate a video file (``source`` a path) or a camera (``source`` an index).

    Writes an mp4 to ``output_path`` (parent created; written to a temporary file in the same
    folder and renamed when complete) and/or shows a window (``show``, needs an OpenCV build
    with GUI; Esc stops). Returns the number of frames processed (at least 1).

    Raises:
        FileNotFoundError: a video file that does not exist.
        DemoInputError: an image file, or a source that cannot be opened or gives no frame
            (not a video, a codec OpenCV cannot decode, no camera).
        OutputError: ``output_path`` holds a file the demo did not write.
        RunLockError: another run writes into the folder of ``output_path``.
    """
    if output_path is None:
        return _annotate_video(predictor, source, None, max_frames, show)
    output_path = Path(output_path)
    with OutputFolder(output_path.parent, what="--output", tool="demo") as folder:
        folder.target(output_path.name)
        count = _annotate_video(predictor, source, output_path, max_frames, show)
        folder.record(output_path.name)
    return count


def _annotate_video(
    predictor: Predictor,
    source: str | int,
    output_path: Path | None,
    max_frames: int | None,
    show: bool,
) -> int:
    """:func:`run_on_video` once the output is accepted: frames in, annotated frames out to the
    video file and/or the window, until the source ends, ``max_frames`` or Esc."""
    capture = _open_video(source)
    total = _expected_frames(capture, source, max_frames)
    sink = _VideoFile(output_path, capture.get(cv2.CAP_PROP_FPS) or 0.0)
    count = 0
    try:
        frames = annotate_frames(predictor, _frames(capture))
        for annotated in tqdm(frames, total=total or None, unit="frame"):
            bgr = np.ascontiguousarray(annotated[:, :, ::-1])
            sink.write(bgr)
            if show and _show(bgr):  # Esc: the frame is written but not counted
                break
            count += 1
            if max_frames is not None and count >= max_frames:
                break
        if count == 0:
            raise DemoInputError(
                f"no frame could be read from {_describe(source)}: not a video, an empty or "
                "truncated file, or a codec this OpenCV build cannot decode"
            )
        sink.finish()
    finally:
        capture.release()
        sink.close()
        if show:
            cv2.destroyAllWindows()
    return count


def _open_video(source: str | int) -> cv2.VideoCapture:
    """The opened capture of a video file or a camera index.

    Raises:
        FileNotFoundError: a video file that does not exist.
        DemoInputError: an image file, or a source OpenCV cannot open.
    """
    if isinstance(source, str):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"video file not found: {source}")
        if Path(source).suffix.lower() in IMAGE_EXTENSIONS:
            raise DemoInputError(f"{source} is an image, not a video: give it with --input")
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        capture.release()
        raise DemoInputError(
            f"cannot open {_describe(source)}: not a video, a format this OpenCV build cannot "
            "decode, or no such camera"
        )
    return capture


def _expected_frames(capture: cv2.VideoCapture, source: str | int, max_frames: int | None) -> int:
    """Frames the progress bar expects: the file's count (a camera's is unknown: 0), at most
    ``max_frames``."""
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if isinstance(source, str) else 0
    if max_frames is not None:
        total = min(total, max_frames) if total > 0 else max_frames
    return total


def _show(bgr: np.ndarray) -> bool:
    """Show one frame in the demo's window; True when Esc asks to stop."""
    cv2.imshow("InstaFormer", bgr)
    return cv2.waitKey(1) == 27


class _VideoFile:
    """An mp4 written to a temporary file beside ``path`` (opened at the first frame, whose size
    it takes) and renamed to ``path`` by :meth:`finish`; ``path`` None writes nothing."""

    def __init__(self, path: Path | None, fps: float) -> None:
        self.path = path
        self.fps = fps if fps > 0 else 30.0
        self.writer: cv2.VideoWriter | None = None
        self.tmp: Path | None = None

    def write(self, bgr: np.ndarray) -> None:
        """Append one BGR frame (uint8[H, W, 3])."""
        if self.path is None:
            return
        if self.writer is None:
            # the container is chosen from the suffix: keep .mp4 last
            self.tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:12]}.mp4")
            size = (bgr.shape[1], bgr.shape[0])
            self.writer = cv2.VideoWriter(
                str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, size
            )
            if not self.writer.isOpened():
                raise OSError(f"cannot write video {self.path}")
        self.writer.write(bgr)

    def finish(self) -> None:
        """Close the video and move it to its name."""
        if self.writer is None or self.tmp is None or self.path is None:
            return
        self.writer.release()
        self.writer = None
        os.replace(self.tmp, self.path)
        self.tmp = None

    def close(self) -> None:
        """Release the writer and remove an unfinished temporary file."""
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None


def opencv_has_gui() -> bool:
    """Whether this OpenCV build can open windows (headless wheels cannot)."""
    info = cv2.getBuildInformation()
    gui = next((line for line in info.splitlines() if line.strip().startswith("GUI:")), "")
    return bool(gui) and "NONE" not in gui
