"""Write the synthetic twin of InstaOrder Panoptic (see instaformer/data/synthetic.py).

Example::

    python tools/make_synthetic_dataset.py --root datasets/synthetic --num-train 300 --num-val 60

Then register it in code (no environment variable needed)::

    from instaformer.data import register_synthetic_instaorder
    register_synthetic_instaorder("datasets/synthetic")
"""

from __future__ import annotations

import argparse

from instaformer.data import make_synthetic_dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="output dataset root (coco/ is created)")
    parser.add_argument("--num-train", type=int, default=200, help="training images")
    parser.add_argument("--num-val", type=int, default=50, help="validation images")
    parser.add_argument("--image-size", type=int, default=128, help="image side in pixels")
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed (output is a function of it)"
    )
    parser.add_argument("--max-objects", type=int, default=5, help="most things per image (>= 2)")
    args = parser.parse_args(argv)
    truth = make_synthetic_dataset(
        args.root,
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=args.image_size,
        seed=args.seed,
        max_objects=args.max_objects,
    )
    for split, images in truth.items():
        print(f"synthetic_instaorder_{split}: {len(images)} images under {args.root}/coco")


if __name__ == "__main__":
    main()
