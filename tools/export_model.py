"""Export the inference network and the order head with ``torch.export`` and, with ``--onnx``,
as ONNX graphs that run in ONNX Runtime (see ``docs/deploy.md``).

Files written to ``--output``:

* ``network.pt2`` (``network.onnx``): image ``float32[1, 3, H, W]`` (0-255, channels in
  ``INPUT.FORMAT``, H x W = ``--height`` x ``--width``, multiples of ``SIZE_DIVISIBILITY``) ->
  ``pred_logits``, ``pred_masks``, ``mask_embed``, ``mask_features``;
* ``order_head.pt2`` (``order_head.onnx``), for models with a ``GeometricTransformer`` order head:
  ``mask_embed [n, C]``, ``masks [n, H/4, W/4]`` (0/1), ``mask_features [C, H/4, W/4]`` -> the
  last layer's logits per task; ``n`` dynamic, 2..``--max-instances``.

The graphs and their contract are described in :mod:`instaformer.deploy.export`; the
post-processing (panoptic merge, query selection, order labels) stays in Python, as
:class:`instaformer.deploy.runtime.OnnxRuntimeModel` runs it. Each ONNX file is checked with
``onnx.checker`` and must contain no control-flow or sequence op (``Loop``, ``If``,
``SequenceEmpty``, ...).

The files follow mask2former/utils/outputs.py: one export at a time per ``--output``; a file
there that the export did not write, the config or the weights are never replaced (refused
with one message, exit status 2, before anything is written).

Usage::

    python tools/export_model.py --config-file CFG --output export/ [--onnx] \
        [--height 512 --width 512] MODEL.WEIGHTS model.pth
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from instaformer.deploy.export import (
    LOOP_OPS,
    export_network,
    export_order_head,
    find_order_head,
    onnx_export_network,
    onnx_export_order_head,
    onnx_op_counts,
)
from mask2former.config import CfgNode
from mask2former.engine.lock import RunLockError
from mask2former.utils.argtypes import int_range
from mask2former.utils.outputs import OutputError, OutputFolder

logger = logging.getLogger("instaformer.export")


def _check_onnx(path: Path) -> None:
    """``onnx.checker`` (full) on ``path``; raises when it fails or the graph has loops."""
    import onnx

    onnx.checker.check_model(str(path), full_check=True)
    counts = onnx_op_counts(path)
    loops = sorted(set(counts) & LOOP_OPS)
    if loops:
        raise RuntimeError(f"{path} contains control-flow/sequence ops {loops}")
    logger.info("%s: %d nodes, ops %s", path.name, sum(counts.values()), ", ".join(counts))


def main(argv: list[str] | None = None) -> int:
    from instaformer.config import setup_cfg

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--output", required=True, help="directory for the .pt2 (and .onnx) files")
    parser.add_argument(
        "--height", type=int_range(1), default=512, help="padded input height (pixels)"
    )
    parser.add_argument(
        "--width", type=int_range(1), default=512, help="padded input width (pixels)"
    )
    parser.add_argument(
        "--max-instances", type=int_range(2), default=256, help="largest n of the head"
    )
    parser.add_argument("--onnx", action="store_true", help="also write ONNX files")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)

    cfg = setup_cfg(args.config_file, args.opts)
    divisor = cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY
    if divisor > 1 and (args.height % divisor or args.width % divisor):
        parser.error(f"--height/--width must be multiples of SIZE_DIVISIBILITY={divisor}")
    if args.onnx:
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError as err:
            parser.error(
                f"--onnx needs the [export] extra ({err}): pip install 'instaformer[export]'"
            )
    try:
        with OutputFolder(args.output, what="--output", tool="export") as out:
            out.protect([args.config_file], "the config file")
            out.protect([cfg.MODEL.WEIGHTS], "the weights (MODEL.WEIGHTS)")
            export(cfg, args, out)
    except (OutputError, RunLockError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    return 0


def export(cfg: CfgNode, args: argparse.Namespace, out: OutputFolder) -> None:
    """Write the files of the module docstring into ``out``; every name is checked before the
    first is written."""
    from instaformer.predictor import Predictor

    model = Predictor(cfg).model
    head = find_order_head(model)
    names = ["network"] + ([] if head is None else ["order_head"])
    extensions = ["pt2", "onnx"] if args.onnx else ["pt2"]
    out.check(f"{name}.{ext}" for name in names for ext in extensions)
    mask_dim = cfg.MODEL.SEM_SEG_HEAD.MASK_DIM
    mask_size = (args.height // 4, args.width // 4)
    programs = {"network": export_network(model, args.height, args.width)}
    if head is None:
        logger.info("the model has no order head: exporting the segmentation network only")
    else:
        programs["order_head"] = export_order_head(head, mask_dim, mask_size, args.max_instances)
    for name, program in programs.items():
        path = out.write(f"{name}.pt2", lambda tmp, p=program: torch.export.save(p, tmp))
        logger.info("wrote %s", path)
    if args.onnx:
        onnx_export_network(model, args.height, args.width, out.target("network.onnx"))
        out.record("network.onnx")
        _check_onnx(out.root / "network.onnx")
        if head is not None:
            path = onnx_export_order_head(
                head, mask_dim, mask_size, out.target("order_head.onnx"), args.max_instances
            )
            out.record("order_head.onnx")
            _check_onnx(path)


if __name__ == "__main__":
    sys.exit(main())
