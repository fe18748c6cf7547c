"""Check registered InstaOrder Panoptic datasets end to end and print a summary.

Example (docs/custom_data.md)::

    python tools/check_dataset.py --config-file configs/custom/shapes_tiny.yaml \\
        --pictures 3 --output-dir output/shapes_check

checks ``DATASETS.TRAIN`` and ``DATASETS.TEST`` of the config (``--datasets`` names others),
after registering its ``DATASETS.CUSTOM`` entries, and ``MODEL.SEM_SEG_HEAD.NUM_CLASSES``
against their categories. Every image, panoptic PNG, segment and order label is read; faults
name the file and value at fault. ``--pictures N`` draws the ground truth of the first N
images of each dataset (panoptic, occlusion arrows, depth ranks) with the demo's drawing code
(:mod:`instaformer.apps.ground_truth`) into ``--output-dir/<dataset>/``; a picture never
replaces a file this tool did not write, and the folder takes one run at a time
(mask2former/utils/outputs.py). Exit code 0 when every
dataset is clean, 1 otherwise, 2 when a picture folder or file is refused.
"""

from __future__ import annotations

import argparse
import os
import sys

import instaformer.data  # noqa: F401  (registers the built-in datasets)
from instaformer.apps.ground_truth import write_ground_truth_pictures
from instaformer.config import ConfigError, setup_cfg
from instaformer.data.check import check_dataset
from instaformer.data.custom import check_num_classes, register_custom_datasets
from mask2former.engine.lock import RunLockError
from mask2former.utils.argtypes import int_range
from mask2former.utils.outputs import OutputError, safe_relative


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", default="", help="config (path or name under configs/)")
    parser.add_argument(
        "--datasets", nargs="+", default=None, help="dataset names (default: the config's)"
    )
    parser.add_argument("--pictures", type=int_range(0), default=0, help="images drawn per dataset")
    parser.add_argument("--output-dir", default=None, help="where the pictures go")
    parser.add_argument("--max-faults", type=int_range(1), default=20, help="faulty images listed")
    parser.add_argument(
        "--max-images", type=int_range(1), default=None, help="check the first N only"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    if args.pictures and not args.output_dir:
        parser.error("--pictures needs --output-dir")
    cfg = setup_cfg(args.config_file, args.opts)
    register_custom_datasets(cfg)
    names = args.datasets or list(dict.fromkeys([*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]))
    if not names:
        parser.error("no dataset: give --datasets or a config with DATASETS.TRAIN / TEST")
    ok = True
    if args.config_file and not args.datasets:
        try:
            check_num_classes(cfg)
        except (ConfigError, FileNotFoundError, ValueError) as err:
            print(f"FAULT {err}")
            ok = False
    for name in names:
        report = check_dataset(
            name, samples=args.pictures, max_faults=args.max_faults, max_images=args.max_images
        )
        try:
            if args.pictures:
                output_dir = os.path.join(args.output_dir, safe_relative(name, "dataset name"))
                write_ground_truth_pictures(report, output_dir)
        except (OutputError, RunLockError) as err:
            print(f"check_dataset: error: {err}", file=sys.stderr)
            return 2
        print(report.summary())
        ok = ok and report.ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
