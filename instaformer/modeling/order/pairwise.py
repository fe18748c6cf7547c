"""Pairwise order head ``PairwiseResNet``: InstaOrderNet inside InstaFormer (docs/reference.md
[IF 1.6], [IF 3.3]; [ION 12]).

Shape shorthand: n selected instances, h x w mask-feature map, S InstaOrderNet input side,
P = n(n-1)/2 unordered pairs.

The head builds its own image input from the bundle's uint8 image (:func:`low_image_from`:
bicubic resize of the [0, 1] RGB image to S x S, aspect not kept, ImageNet normalisation).
For every unordered pair ``(i, j)`` the network runs on ``[mask_i, mask_j, image]`` and on
``[mask_j, mask_i, image]``; all 2P inputs go through in chunks of ``max_pairs_per_batch``. The two
passes are symmetrised ([ION 8], one sigmoid only: the reference's double sigmoid in
``od`` is fixed) and returned as log-probabilities in the project's matrix convention, its
:meth:`PairwiseResNet.log_probs` (no class prior: InstaOrderNet was trained without one):

* ``occlusion[i, j] = log([1 - p, p])`` with p = P(i occludes j) (argmax 1 iff p > 0.5);
* ``depth[i, j] = log([P(i farther), P(i closer), P(same)])``.

Differences from the reference: masks are the head's binary masks resized (nearest) to S x S
after cropping the padding away (``valid_size``), instead of mask logits resized bilinearly from
the padded frame ([IF 7.9] misalignment fixed); exact probability ties resolve towards the first
class of the project order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instaformer.instaordernet.network import InstaOrderResNet
from instaformer.instaordernet.symmetrisation import (
    all_pairs,
    depth_matrix_from_pairs,
    occlusion_matrix_from_pairs,
    symmetrise_depth,
    symmetrise_occlusion,
)
from instaformer.modeling.order.contract import OrderHead, OrderInputs
from instaformer.modeling.order.feature_attention import check_binary_masks
from instaformer.vocabulary import IMAGENET_MEAN, IMAGENET_STD, TASK_CLASSES

__all__ = ["PairwiseResNet", "low_image_from"]

_MIN_PROB = 1e-12  # floor before the log so that impossible classes stay finite


def low_image_from(image: Tensor, size: int, image_format: str) -> Tensor:
    """uint8 Tensor[3, H, W] -> float32 Tensor[3, size, size]: the pairwise head's RGB input.

    Bicubic resize of the [0, 1]-scaled RGB image (aspect not kept, ``align_corners=False``),
    then ImageNet mean/std normalisation; computed on ``image``'s device.
    """
    if image_format not in ("RGB", "BGR"):
        raise ValueError(f"image format must be 'RGB' or 'BGR', got {image_format!r}")
    x = image.float() / 255.0
    if image_format == "BGR":
        x = x.flip(0)
    x = F.interpolate(x[None], size=(size, size), mode="bicubic", align_corners=False)[0]
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    return (x - mean) / std


class _Wrapped(nn.Module):
    """One-attribute container: gives the ``instaordernet.module.*`` key level of the releases."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


class PairwiseResNet(OrderHead):
    """All-pairs InstaOrderNet order head (one layer; log-probabilities, no class prior)."""

    num_layers = 1
    uses_class_prior = False

    def __init__(
        self, *, network: InstaOrderResNet, input_size: int, max_pairs_per_batch: int = 64
    ) -> None:
        """
        Args:
            network: the InstaOrderNet (its ``tasks`` are the head's tasks).
            input_size: side S of the square image and mask inputs.
            max_pairs_per_batch: ordered pairs per network forward (bounds memory).
        """
        super().__init__()
        if max_pairs_per_batch < 1:
            raise ValueError(f"max_pairs_per_batch must be >= 1, got {max_pairs_per_batch}")
        self.instaordernet = _Wrapped(network)
        self.input_size = input_size
        self.max_pairs_per_batch = max_pairs_per_batch
        self.register_load_state_dict_pre_hook(_insert_module_level)

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.instaordernet.module.tasks

    def scores(self, inputs: OrderInputs) -> dict[str, list[Tensor]]:
        """The contract's call: :meth:`forward` on the bundle's masks and its own image input
        (:func:`low_image_from` of ``inputs.image``). Already log-probabilities."""
        if inputs.image is None:
            raise ValueError("PairwiseResNet needs the input image (OrderInputs.image is None)")
        image = low_image_from(inputs.image, self.input_size, inputs.image_format)
        return self(inputs.masks, image.to(inputs.mask_features), inputs.valid_size)

    def log_probs(self, inputs: OrderInputs) -> dict[str, list[Tensor]]:
        """:meth:`scores` in float32 (also under autocast): normalised already, no second
        softmax."""
        return {t: [s.float() for s in layers] for t, layers in self.scores(inputs).items()}

    def forward(
        self, masks: Tensor, image: Tensor, valid_size: tuple[int, int] | None = None
    ) -> dict[str, list[Tensor]]:
        """Symmetrised order log-probabilities of every instance pair of one image.

        Args:
            masks: Tensor[n, h, w] binary (0/1) masks at mask-feature resolution.
            image: float Tensor[3, S, S] the ImageNet-normalised image (:func:`low_image_from`).
            valid_size: (h', w') part of the mask map covering the unpadded image; None = all.

        Returns:
            ``{task: [Tensor[n, n, K]]}`` (one "layer"), log-probabilities as in the module
            docstring; diagonal cells are uninformative.
        """
        size = self.input_size
        if tuple(image.shape) != (3, size, size):
            raise ValueError(f"image input must be (3, {size}, {size}), got {tuple(image.shape)}")
        n = masks.shape[0]
        masks = check_binary_masks(masks)
        if valid_size is not None:
            masks = masks[:, : valid_size[0], : valid_size[1]]
        small = F.interpolate(masks[:, None].to(image.dtype), size=(size, size), mode="nearest")
        small = small[:, 0]  # n x S x S
        pairs = all_pairs(n, device=masks.device)  # P x 2, i < j
        ordered = torch.cat([pairs, pairs.flip(1)])  # 2P x 2: (i, j) then (j, i)
        net = self.instaordernet.module
        chunks: dict[str, list[Tensor]] = {t: [] for t in net.tasks}
        for part in ordered.split(self.max_pairs_per_batch):
            x = torch.cat(
                [
                    small[part[:, 0], None],
                    small[part[:, 1], None],
                    image.expand(part.shape[0], -1, -1, -1),
                ],
                dim=1,
            )  # B x 5 x S x S
            for task, logits in net(x).items():
                chunks[task].append(logits)
        num = pairs.shape[0]
        out: dict[str, list[Tensor]] = {}
        for task in net.tasks:
            if num:
                logits = torch.cat(chunks[task])
            else:
                logits = image.new_zeros(0, TASK_CLASSES[task])
            probs = _PAIR_PROBS[task](pairs, logits[:num], logits[num:], n)  # n x n x K
            out[task] = [torch.log(probs.clamp_min(_MIN_PROB))]
        return out


def _occlusion_probs(pairs: Tensor, ab: Tensor, ba: Tensor, n: int) -> Tensor:
    """Tensor[n, n, 2]: (1 - p, p) with p = P(row occludes column)."""
    p = occlusion_matrix_from_pairs(pairs, symmetrise_occlusion(ab, ba), n)
    return torch.stack([1 - p, p], dim=-1)


def _depth_probs(pairs: Tensor, ab: Tensor, ba: Tensor, n: int) -> Tensor:
    """Tensor[n, n, 3]: (P(row farther), P(row closer), P(same))."""
    return depth_matrix_from_pairs(pairs, symmetrise_depth(ab, ba), n)


# Task -> symmetrised probabilities of both input orders (Tensor[P, K] each), project convention.
_PAIR_PROBS = {"occlusion": _occlusion_probs, "depth": _depth_probs}


def _insert_module_level(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Load-state-dict pre-hook: accept ``instaordernet.<key>`` as ``instaordernet.module.<key>``
    (checkpoints built without InstaOrderNet weights lack the ``module.`` level)."""
    head = prefix + "instaordernet."
    for key in [k for k in state_dict if k.startswith(head)]:
        if not key.startswith(head + "module."):
            state_dict[head + "module." + key[len(head) :]] = state_dict.pop(key)
