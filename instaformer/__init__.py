"""InstaFormer: instance-wise occlusion and depth order prediction on top of Mask2Former.

Importing this package never needs a compiled extension or a GPU.
"""

__version__ = "0.1.0"

__all__ = ["Predictor", "__version__"]


def __getattr__(name: str):
    # Lazy: ``import instaformer`` stays light; ``instaformer.Predictor`` builds on the model.
    if name == "Predictor":
        from instaformer.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'instaformer' has no attribute {name!r}")
