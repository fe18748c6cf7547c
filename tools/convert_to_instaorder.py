"""Convert order annotations in the simple format to InstaOrder Panoptic, or write an example.

    python tools/convert_to_instaorder.py convert SOURCE --image-root DIR \\
        --out-json FILE --out-panoptic DIR
    python tools/convert_to_instaorder.py example ROOT [--num-train 40 --num-val 10]

``convert`` reads SOURCE, one JSON per split or a folder with ``categories.json`` and one JSON
per image (the format of docs/custom_data.md and instaformer/data/convert.py), and writes the
InstaOrder Panoptic JSON and its panoptic PNGs, and nothing else but the output folders'
record of written files. Before writing anything it refuses an output that would replace an
input or a file it did not write, a ``file_name`` that is absolute or has ``..``, and an
``--out-panoptic`` that is the image folder or a mask folder (mask2former/utils/outputs.py).
``example`` writes a small dataset in the simple format (from the synthetic twin, three
non-COCO categories) under ROOT: ``images/``, ``masks/`` and ``{train,val}.json``; writing it
again replaces only the files it wrote there before (a file of one of those names that it did not
write is refused before anything is written).
"""

from __future__ import annotations

import argparse
import sys

from instaformer.data.convert import convert_to_instaorder_panoptic
from instaformer.data.example import make_example_dataset
from instaformer.data.io import DataError
from mask2former.engine.lock import RunLockError
from mask2former.utils.argtypes import int_range
from mask2former.utils.outputs import OutputError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("convert", help="simple format -> InstaOrder Panoptic")
    convert.add_argument("source", help="split JSON, or folder of per-image JSONs")
    convert.add_argument("--image-root", required=True, help="folder of the images")
    convert.add_argument("--out-json", required=True, help="InstaOrder Panoptic JSON to write")
    convert.add_argument("--out-panoptic", required=True, help="folder for the panoptic PNGs")
    example = sub.add_parser("example", help="write an example dataset in the simple format")
    example.add_argument("root", help="output folder")
    example.add_argument("--num-train", type=int_range(0), default=40, help="training images")
    example.add_argument("--num-val", type=int_range(0), default=10, help="validation images")
    example.add_argument(
        "--image-size", type=int_range(32), default=64, help="image side in pixels"
    )
    example.add_argument("--seed", type=int_range(0), default=0, help="random seed")
    args = parser.parse_args(argv)
    if args.command == "example":
        try:
            counts = make_example_dataset(
                args.root, args.num_train, args.num_val, args.image_size, args.seed
            )
        except (OutputError, RunLockError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        for split, n in counts.items():
            print(f"{split}: {n} images, annotations in {args.root}/{split}.json")
        return 0
    try:
        counts = convert_to_instaorder_panoptic(
            args.source,
            image_root=args.image_root,
            out_json=args.out_json,
            out_panoptic=args.out_panoptic,
        )
    except (DataError, FileNotFoundError, OutputError, RunLockError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"{args.out_json}: {counts['images']} images, {counts['segments']} segments, "
        f"{counts['ordered_instances']} ordered instances, {counts['occlusion_pairs']} "
        f"occlusion entries, {counts['depth_pairs']} depth pairs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
