"""Orders between user-given instance masks of one image with an InstaOrderNet model.

Shape shorthand: K instances, H x W image.

Used by the demo and the Predictor for InstaOrderNet configs: the masks may come from the user or
from a panoptic model. Outputs follow the project's matrix convention ([IF 0]); see
:mod:`instaformer.instaordernet.meta_arch`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from instaformer.instaordernet.meta_arch import InstaOrderNet

__all__ = ["predict_orders"]


def predict_orders(
    model: InstaOrderNet,
    image: np.ndarray | Tensor,
    masks: np.ndarray | Tensor,
    *,
    boxes: np.ndarray | Tensor | None = None,
    image_format: str = "RGB",
) -> dict[str, Tensor]:
    """Occlusion and/or depth order of every pair of ``masks`` (the model's tasks).

    Args:
        model: an InstaOrderNet meta-architecture (``build_model`` on an InstaOrderNet config,
            weights loaded with :func:`instaformer.instaordernet.load_instaordernet_weights`).
        image: uint8 array[H, W, 3] (as read by OpenCV/PIL) or Tensor[3, H, W] (uint8 0-255 or
            float 0-1).
        masks: bool array/Tensor[K, H, W], one binary mask per instance.
        boxes: optional float[K, 4] xywh boxes for patch mode (default: tight mask boxes);
            kept in float64, so annotation boxes give the original's windows exactly.
        image_format: channel order of ``image``, "RGB" or "BGR".
    Returns:
        on the CPU: ``"occlusion"`` Tensor[K, K] int64 (1 = row occludes column),
        ``"occlusion_prob"`` Tensor[K, K]; ``"depth"`` Tensor[K, K] int64 (1 = row closer, 0 =
        farther, 2 = same, diagonal -1), ``"depth_prob"`` Tensor[K, K, 3] (farther, closer,
        same), for the tasks the model has.
    Raises:
        ValueError: bad shapes or format.
    """
    if image_format not in ("RGB", "BGR"):
        raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image array must be [H, W, 3], got shape {image.shape}")
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    if image_format == "BGR":
        image = image.flip(0)
    masks = torch.as_tensor(np.asarray(masks) if isinstance(masks, np.ndarray) else masks)
    if masks.dim() == 2:
        masks = masks[None]
    box_tensor = None if boxes is None else torch.as_tensor(boxes, dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        out = model.predict(image, masks.bool(), box_tensor)
    finally:
        model.train(was_training)
    return {k: v.cpu() for k, v in out.items()}
