"""Run InstaFormer on images, a video or a webcam; write pictures of the orders and JSON.

Also installed as the ``instaformer-demo`` command; ``demo/demo.py`` is a thin wrapper.

Examples::

    python demo/demo.py --config-file configs/instaorder/occlusion_depth/all/swin/\
maskformer2_swin_tiny_bs16_50ep.yaml --input photos/*.jpg --output out/ \
MODEL.WEIGHTS instaformer_od_swin_t.pth MODEL.DEVICE cpu

    python demo/demo.py --config-file CFG --video-input clip.mp4 --output out/

Per image ``<stem>``: ``<stem>_panoptic.png``, ``<stem>_occlusion.png``, ``<stem>_depth.png``
(pictures for the model's tasks) and ``<stem>.json``. Order evaluation flags need not be set:
the predictor turns them off. Exit status 1 when some input could not be read.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

from instaformer.config import ConfigError, setup_cfg
from instaformer.demo_utils import expand_inputs, opencv_has_gui, run_on_paths, run_on_video
from instaformer.predictor import BACKENDS, Predictor

logger = logging.getLogger("instaformer.demo")

_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")  # e.g. MODEL.WEIGHTS


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="yaml config")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input",
        nargs="+",
        help="image files, directories, glob patterns (quoted) or a .txt file listing paths",
    )
    source.add_argument("--video-input", help="video file to annotate")
    source.add_argument("--webcam", action="store_true", help="annotate the camera stream")
    parser.add_argument(
        "--output",
        help="output directory (created if missing); required unless OpenCV can show a window",
    )
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=None,
        help="minimum class score of a segment (MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD)",
    )
    parser.add_argument(
        "--masks", action="store_true", help="include COCO RLE masks of the segments in the JSON"
    )
    parser.add_argument(
        "--max-frames", type=int, default=None, help="stop a video/webcam after this many frames"
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="pytorch",
        help="onnxruntime: run the exported network and order head in ONNX Runtime (CPU; "
        "exported on first use per input size and cached next to the weights)",
    )
    parser.add_argument(
        "--opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="KEY VALUE config overrides (may also be given without --opts, at the end)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = get_parser()
    args, rest = parser.parse_known_args(argv)
    unknown = [r for r in rest if r.startswith("--")]
    if unknown:
        parser.error(f"unrecognised arguments: {' '.join(unknown)}")
    if args.input:  # "--input a.jpg b.jpg KEY VALUE": the overrides start at the first key
        first_key = next(
            (i for i, x in enumerate(args.input) if _CONFIG_KEY.match(x) and not os.path.exists(x)),
            len(args.input),
        )
        rest = args.input[first_key:] + rest
        args.input = args.input[:first_key]
        if not args.input:
            parser.error("--input needs at least one path")
    opts = list(rest) + list(args.opts)
    if args.confidence_threshold is not None:
        opts += ["MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", str(args.confidence_threshold)]
    show = args.output is None
    if show and not opencv_has_gui():
        parser.error("--output is required: this OpenCV build cannot open windows")
    if args.input and show:
        parser.error("--output is required for --input")
    try:
        cfg = setup_cfg(args.config_file, opts)
        paths = expand_inputs(args.input) if args.input else []
    except (ConfigError, ValueError) as err:
        parser.error(str(err))
    predictor = Predictor(cfg, backend=args.backend)

    if args.input:
        report = run_on_paths(predictor, paths, args.output, include_masks=args.masks)
        logger.info("wrote results of %d image(s) to %s", len(report.written), args.output)
        for path, reason in report.failed.items():
            logger.error("failed input %s: %s", path, reason)
        return 0 if report.ok else 1
    source = 0 if args.webcam else args.video_input
    output = None
    if args.output is not None:
        stem = "webcam" if args.webcam else Path(args.video_input).stem
        output = Path(args.output) / f"{stem}_orders.mp4"
    frames = run_on_video(predictor, source, output, max_frames=args.max_frames, show=show)
    logger.info("annotated %d frame(s)%s", frames, f" into {output}" if output else "")
    return 0


def cli() -> None:
    """``instaformer-demo`` / ``demo/demo.py``: exit with :func:`main`'s status."""
    sys.exit(main())
