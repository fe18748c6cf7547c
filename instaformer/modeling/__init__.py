"""InstaFormer model: ``build_model(cfg)`` builds the meta-architecture named in the config."""

from mask2former.modeling import build_model

__all__ = ["build_model"]
