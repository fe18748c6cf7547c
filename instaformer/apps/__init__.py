"""The applications on top of :class:`~instaformer.predictor.Predictor`: the demo command
(:mod:`~instaformer.apps.demo`, :mod:`~instaformer.apps.demo_utils`), the interactive viewer's
data (:mod:`~instaformer.apps.interactive`, served by ``demo/app.py``), the pictures
(:mod:`~instaformer.apps.visualization`) and pictures of a dataset's ground truth
(:mod:`~instaformer.apps.ground_truth`).

Nothing below this package imports it or the predictor: the model, data, evaluation and config
modules speak in :mod:`instaformer.structures` (a test scans the imports).
"""
