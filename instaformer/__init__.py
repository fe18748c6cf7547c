"""InstaFormer: instance-wise occlusion and depth order prediction on top of Mask2Former.

Importing this package never needs a compiled extension or a GPU; like ``mask2former``, it
prefers passive OpenMP waiting when imported before ``torch`` (:mod:`mask2former.utils.threads`).
"""

import mask2former  # noqa: F401  (sets OMP_WAIT_POLICY before torch is imported)

__version__ = "0.1.0"

__all__ = ["Predictor", "__version__"]


def __getattr__(name: str):
    # Lazy: ``import instaformer`` stays light; ``instaformer.Predictor`` builds on the model.
    if name == "Predictor":
        from instaformer.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'instaformer' has no attribute {name!r}")
