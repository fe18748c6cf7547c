"""Run InstaFormer on images, a video or a webcam (``instaformer-demo``); see ``--help``."""

from instaformer.apps.demo import cli

if __name__ == "__main__":
    cli()
