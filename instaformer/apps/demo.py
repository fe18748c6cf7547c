"""Run InstaFormer on images, a video or a webcam; write pictures of the orders and JSON.

Also installed as the ``instaformer-demo`` command; ``demo/demo.py`` is a thin wrapper.

Examples::

    python demo/demo.py --config-file configs/instaorder/occlusion_depth/all/swin/\
maskformer2_swin_tiny_bs16_50ep.yaml --input photos/*.jpg --output out/ \
MODEL.WEIGHTS instaformer_od_swin_t.pth MODEL.DEVICE cpu

    python demo/demo.py --config-file CFG --video-input clip.mp4 --output out/

    instaformer-demo --model instaformer_od_swin_t --input photo.jpg --output out/

``--model NAME`` takes a released model's config and weights (``instaformer-zoo list``); the
weights are downloaded once into the cache (``$INSTAFORMER_CACHE``).

Per image ``<stem>``: ``<stem>_panoptic.png``, ``<stem>_occlusion.png``, ``<stem>_depth.png``
(pictures for the model's tasks) and ``<stem>.json``; an output never replaces an input or a file
the demo did not write (the stem then gets a suffix ``_1``, ...), and directories given as
``--input`` skip earlier outputs. Order evaluation flags need not be set: the predictor turns
them off. Images larger than the test size (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``) are
downscaled to it unless ``--full-resolution``; images over 120 megapixels or 20000 pixels per
side are refused. Exit status 1 when some image failed (each is logged with its reason; the
others are still processed).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys

from instaformer.apps.demo_utils import (
    expand_inputs,
    opencv_has_gui,
    run_on_paths,
    run_on_video,
    video_output_path,
)
from instaformer.config import ConfigError, setup_cfg
from instaformer.errors import run_cli
from instaformer.model_zoo import model_args
from instaformer.predictor import BACKENDS, Predictor
from mask2former.utils.argtypes import float_range, int_range
from mask2former.utils.outputs import require_dir

logger = logging.getLogger("instaformer.apps.demo")

_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")  # e.g. MODEL.WEIGHTS


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--config-file", metavar="FILE", help="yaml config (path or name)")
    model.add_argument(
        "--model",
        metavar="NAME",
        help="released model by name (instaformer-zoo list): its config and weights",
    )
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
        type=float_range(0.0, 1.0),
        default=None,
        help="minimum class score of a segment, 0-1 (MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD)",
    )
    parser.add_argument(
        "--masks", action="store_true", help="include COCO RLE masks of the segments in the JSON"
    )
    parser.add_argument(
        "--max-frames",
        type=int_range(1),
        default=None,
        help="stop a video/webcam after this many frames (at least 1)",
    )
    parser.add_argument(
        "--full-resolution",
        action="store_true",
        help="run images larger than the test size at their native size (needs far more memory)",
    )
    parser.add_argument(
        "--debug", action="store_true", help="full traceback of config/data/checkpoint errors"
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
    if not show:
        require_dir(args.output, "--output")
    if show and not opencv_has_gui():
        parser.error("--output is required: this OpenCV build cannot open windows")
    if args.input and show:
        parser.error("--output is required for --input")
    try:
        config_file = args.config_file
        if args.model:
            config_file, weights = model_args(args.model, for_images=True)
            opts = weights + opts
        cfg = setup_cfg(config_file, opts)
        paths = expand_inputs(args.input) if args.input else []
    except (ConfigError, ValueError) as err:
        parser.error(str(err))
    except KeyError as err:
        parser.error(str(err.args[0]))
    predictor = Predictor(cfg, fit_test_size=not args.full_resolution, backend=args.backend)

    if args.input:
        report = run_on_paths(predictor, paths, args.output, include_masks=args.masks)
        done = len(paths) - len(report.failed)
        logger.info(
            "wrote %d file(s) for %d of %d image(s) to %s",
            report.num_files,
            done,
            len(paths),
            args.output,
        )
        if report.failed:
            logger.error("%d image(s) failed: %s", len(report.failed), ", ".join(report.failed))
        return 0 if report.ok else 1
    source = 0 if args.webcam else args.video_input
    output = None if args.output is None else video_output_path(args.output, source)
    frames = run_on_video(predictor, source, output, max_frames=args.max_frames, show=show)
    logger.info("annotated %d frame(s)%s", frames, f" into {output}" if output else "")
    return 0


def cli() -> None:
    """``instaformer-demo`` / ``demo/demo.py``: exit with :func:`main`'s status (2 with one
    message for a config, data or checkpoint error; ``--debug`` keeps the traceback)."""
    sys.exit(run_cli(main, None, "instaformer-demo"))
