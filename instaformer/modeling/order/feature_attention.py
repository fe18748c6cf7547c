"""Instance-axis attention over mask-gated pixel features, then a global max-pool.

The "attention before pooling" step of the released holistic head (``MASK_NON_MASK_VALUES``
True). Derivation of the fast formulation: ``docs/orders.md``.

Shape shorthand: n instances, C channels, h x w the mask-feature map, P pixels covered by at
least one instance mask.

The released head gates the features with every instance mask, ``G[i] = m_i * F`` (Tensor[n, C,
h, w]), runs one pre-norm transformer layer at every pixel with the n instances as the sequence
(n*h*w tokens), zeroes every output element whose input element ``G[i, c, y, x]`` is exactly 0, and
max-pools each instance map over all pixels.

Two formulations of that function live here:

* :func:`attention_pool_dense`: the released computation, O(n*h*w) tokens. Kept as the reference
  for tests and benchmarks.
* :func:`attention_pool_sparse`: the same function from the P covered pixels only. With binary
  masks, every in-mask token at a pixel has the input ``F[:, y, x]`` and every out-of-mask token
  the input 0, so a pixel holds only two distinct tokens; the ``n - k`` identical zero tokens
  enter the softmax as one key whose logit is offset by ``log(n - k)`` (k = instances covering the
  pixel), the k identical in-mask tokens as one key offset by ``log(k)``. Out-of-mask outputs
  are zeroed anyway, so only the in-mask output (one per pixel, shared by the k covering
  instances) is needed; the pool of instance i is the max of those over i's pixels, and 0 if i's
  mask leaves any pixel out (the zeroed outputs take part in the max).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from instaformer.modeling.order.layers import TransformerLayer

__all__ = [
    "attention_pool_dense",
    "attention_pool_sparse",
    "check_binary_masks",
    "max_pool_in_masks",
]

_PIXEL_CHUNK = 4096  # covered pixels per chunk of the fast attention


def check_binary_masks(masks: Tensor) -> Tensor:
    """Tensor[n, h, w] of 0/1 values (any dtype) -> the same masks as bool; raises otherwise."""
    if masks.dtype == torch.bool:
        return masks
    binary = masks != 0
    if not torch.equal(binary.to(masks.dtype), masks):
        raise ValueError(
            "the order head needs binary masks with values 0 and 1 only; got values "
            f"{torch.unique(masks)[:8].tolist()} (dtype {masks.dtype})"
        )
    return binary


def attention_pool_dense(
    layer: TransformerLayer | None, masks: Tensor, features: Tensor, zero_non_mask: bool = True
) -> Tensor:
    """Released formulation: attention over n*h*w tokens, then max-pool.

    Args:
        layer: the feature transformer's layer, or None (pool the gated features directly).
        masks: Tensor[n, h, w] binary 0/1 instance masks.
        features: Tensor[C, h, w] pixel features (``mask_features`` of one image).
        zero_non_mask: zero every output element whose gated input element is exactly 0.

    Returns:
        Tensor[n, C]: pooled feature per instance.
    """
    n, h, w = masks.shape
    c = features.shape[0]
    gated = masks.to(features.dtype)[:, None] * features[None]  # n x C x h x w
    if layer is None or n == 0:
        return gated.flatten(2).amax(-1) if h * w > 0 else gated.new_zeros(n, c)
    tokens = gated.flatten(2).permute(0, 2, 1)  # n x C x hw -> n x hw x C (sequence-first)
    out = layer(tokens).permute(0, 2, 1).reshape(n, c, h, w)  # n x hw x C -> n x C x h x w
    if zero_non_mask:
        out = out.masked_fill(gated == 0, 0.0)
    return out.flatten(2).amax(-1)


def max_pool_in_masks(values: Tensor, cover: Tensor, full: Tensor) -> Tensor:
    """Per-instance max over its covered pixels, with the zeros of uncovered pixels included.

    Args:
        values: Tensor[P, C] one value vector per covered pixel.
        cover: Tensor[n, P] bool, instance i covers covered-pixel p.
        full: Tensor[n] bool, instance i's mask covers the whole map (then no zero takes part).

    Returns:
        Tensor[n, C]: ``max(max_{p in mask_i} values[p], 0)``, or without the 0 where ``full``;
        0 for an empty mask.
    """
    n, c = cover.shape[0], values.shape[1]
    init = values.new_zeros(n, c)
    init = init.masked_fill(full[:, None], -math.inf)
    instance, pixel = cover.nonzero(as_tuple=True)  # (instance, pixel) membership pairs
    index = instance[:, None].expand(-1, c)
    return init.scatter_reduce(0, index, values[pixel], reduce="amax", include_self=True)


def _in_mask_outputs(layer: TransformerLayer, x: Tensor, count: Tensor, n: int) -> Tensor:
    """Output of ``layer`` for the in-mask token of each covered pixel.

    Args:
        layer: pre-norm transformer layer of width C.
        x: Tensor[P, C] the feature vector of each covered pixel (= every in-mask token's input).
        count: Tensor[P] number k >= 1 of instances covering the pixel.
        n: total number of instances (tokens per pixel in the released formulation).

    Returns:
        Tensor[P, C]: the layer output of an in-mask token, before zeroing.
    """
    attn = layer.attn
    p, c = x.shape
    heads = attn.num_heads
    head_dim = c // heads
    u = layer.norm1(x)  # P x C
    u0 = layer.norm1(x.new_zeros(1, c))  # 1 x C: every out-of-mask token (input 0)
    q, k, v = F.linear(u, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    _, k0, v0 = F.linear(u0, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q = q.reshape(p, heads, head_dim) * head_dim**-0.5
    k, v = k.reshape(p, heads, head_dim), v.reshape(p, heads, head_dim)
    k0, v0 = k0.reshape(1, heads, head_dim), v0.reshape(1, heads, head_dim)
    count = count.to(x.dtype)[:, None]  # P x 1
    # Two distinct keys per pixel; log-multiplicities k and n - k (log 0 = -inf drops the key).
    logit_in = (q * k).sum(-1) + torch.log(count)  # P x heads
    logit_out = (q * k0).sum(-1) + torch.log(n - count)  # P x heads
    weights = torch.softmax(torch.stack([logit_in, logit_out], dim=-1), dim=-1)  # P x heads x 2
    mixed = weights[..., :1] * v + weights[..., 1:] * v0  # P x heads x head_dim
    x = x + attn.out_proj(mixed.reshape(p, c))
    return x + layer.mlp(layer.norm2(x))


def attention_pool_sparse(
    layer: TransformerLayer | None, masks: Tensor, features: Tensor
) -> Tensor:
    """Same function as ``attention_pool_dense(..., zero_non_mask=True)`` from covered pixels only.

    Args:
        layer: the feature transformer's layer, or None (pool the gated features directly).
        masks: Tensor[n, h, w] binary 0/1 instance masks (may overlap).
        features: Tensor[C, h, w] pixel features.

    Returns:
        Tensor[n, C]: pooled feature per instance. Cost O(P) tokens instead of O(n*h*w).
    """
    n = masks.shape[0]
    c = features.shape[0]
    if n == 0:
        return features.new_zeros(0, c)
    member = check_binary_masks(masks).flatten(1)  # n x hw
    coverage = member.sum(0)  # hw
    covered = coverage.nonzero().squeeze(1)  # P
    x = features.flatten(1).t()[covered]  # C x hw -> hw x C -> P x C (contiguous gather)
    if layer is not None:
        # Pixels are independent: chunks bound the memory of the MLP's hidden layer.
        count = coverage[covered]
        y = torch.cat(
            [
                _in_mask_outputs(layer, xs, ks, n)
                for xs, ks in zip(x.split(_PIXEL_CHUNK), count.split(_PIXEL_CHUNK), strict=True)
            ]
        )
        # Element-wise zeroing where the gated input is exactly 0 (released semantics).
        x = y.masked_fill(x == 0, 0.0)
    return max_pool_in_masks(x, member[:, covered], member.all(1))
