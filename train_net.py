"""Train or evaluate InstaFormer / InstaOrderNet models (detectron2's command line).

    python train_net.py --config-file CONFIG [--num-gpus N] [--resume] [--eval-only] [KEY VALUE ...]

See ``python train_net.py --help`` and docs/training.md.
"""

from instaformer.train import run
from mask2former.engine import default_argument_parser

if __name__ == "__main__":
    run(default_argument_parser(description=__doc__.split("\n")[0]).parse_args())
