"""Write the synthetic twin of InstaOrder Panoptic (see instaformer/data/synthetic.py).

Example::

    python tools/make_synthetic_dataset.py --num-train 300 --num-val 60

writes it to ``$DETECTRON2_DATASETS/synthetic_instaorder`` (default ``datasets/``), where the
registered datasets ``synthetic_instaorder_{train,val}`` (InstaFormer) and
``synthetic_instaorder_{train,val}_instances`` (InstaOrderNet) read it, e.g.
``python train_net.py ... DATASETS.TRAIN "('synthetic_instaorder_train',)"``. Written elsewhere
(``--root``), register it in code with ``register_synthetic_instaorder(root)``.

The root follows mask2former/utils/outputs.py: writing it again replaces only the files the
generator wrote there before; any other file at an output name is refused, before anything is
written, with one message and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from instaformer.data import datasets_root, make_synthetic_dataset
from instaformer.data.datasets import SYNTHETIC_SUBDIR
from mask2former.engine.lock import RunLockError
from mask2former.utils.argtypes import int_range
from mask2former.utils.outputs import OutputError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root",
        default=None,
        help="output dataset root (coco/ is created in it); default "
        f"$DETECTRON2_DATASETS/{SYNTHETIC_SUBDIR}",
    )
    parser.add_argument("--num-train", type=int_range(0), default=200, help="training images")
    parser.add_argument("--num-val", type=int_range(0), default=50, help="validation images")
    parser.add_argument(
        "--image-size", type=int_range(32), default=128, help="image side in pixels"
    )
    parser.add_argument(
        "--seed", type=int_range(0), default=0, help="random seed (output is a function of it)"
    )
    parser.add_argument(
        "--max-objects", type=int_range(2), default=5, help="most things per image (>= 2)"
    )
    args = parser.parse_args(argv)
    if args.root is None:
        args.root = os.path.join(datasets_root(), SYNTHETIC_SUBDIR)
    try:
        truth = make_synthetic_dataset(
            args.root,
            num_train=args.num_train,
            num_val=args.num_val,
            image_size=args.image_size,
            seed=args.seed,
            max_objects=args.max_objects,
            what="--root",
        )
    except (OutputError, RunLockError) as err:
        print(f"make_synthetic_dataset: error: {err}", file=sys.stderr)
        return 2
    for split, images in truth.items():
        print(f"synthetic_instaorder_{split}: {len(images)} images under {args.root}/coco")
    return 0


if __name__ == "__main__":
    sys.exit(main())
