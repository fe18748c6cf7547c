"""Train or evaluate InstaFormer / InstaOrderNet models (detectron2's command line).

    python train_net.py --config-file CONFIG [--num-gpus N] [--resume] [--eval-only] [KEY VALUE ...]
    python train_net.py --model NAME --eval-only   # a released model (instaformer-zoo list)

Also installed as the ``instaformer-train`` command. See ``--help`` and docs/training.md.
"""

from instaformer.train import cli

if __name__ == "__main__":
    cli()
