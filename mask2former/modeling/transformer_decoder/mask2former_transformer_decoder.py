"""Masked-attention transformer decoder of Mask2Former, with InstaFormer decoder adapters.

Shape shorthand: B images, Q queries, C hidden width, K classes (+1 = no object),
E mask-embedding width (``MASK_DIM``), h, w mask-feature size, L = 3 memory levels.
Layer i: masked cross-attention on level ``i % 3`` -> self-attention -> FFN (+ adapter).
Each prediction's mask logits above 0 define where the next layer's queries may attend.
(docs/reference.md [IF 1.1], [IF 1.2.1-2].)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mask2former.config import CfgNode
from mask2former.modeling.adapters import DecoderAdapter, adapter_args
from mask2former.modeling.backbone.resnet import Conv2d, c2_xavier_fill
from mask2former.modeling.configurable import configurable
from mask2former.modeling.registry import TRANSFORMER_DECODER_REGISTRY
from mask2former.modeling.transformer_decoder.layers import (
    MLP,
    CrossAttentionLayer,
    FFNLayer,
    SelfAttentionLayer,
)
from mask2former.modeling.transformer_decoder.position_encoding import PositionEmbeddingSine

__all__ = [
    "MultiScaleMaskedTransformerDecoder",
    "build_transformer_decoder",
    "downsample_bilinear",
]


@TRANSFORMER_DECODER_REGISTRY.register()
class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Learnable queries refined by masked attention over 3 pixel-decoder levels."""

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        pre_norm: bool,
        mask_dim: int,
        enforce_input_project: bool,
        adapter_dim: int = 0,
        adapter_scale: float = 0.1,
    ) -> None:
        """``dec_layers`` counts decoder layers (the config's DEC_LAYERS minus 1)."""
        super().__init__()
        self.pe_layer = PositionEmbeddingSine(num_pos_feats=hidden_dim // 2, normalize=True)
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(d_model=hidden_dim, nhead=nheads, normalize_before=pre_norm)
            for _ in range(dec_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(d_model=hidden_dim, nhead=nheads, normalize_before=pre_norm)
            for _ in range(dec_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(d_model=hidden_dim, dim_feedforward=dim_feedforward, normalize_before=pre_norm)
            for _ in range(dec_layers)
        )
        if adapter_dim:
            self.transformer_adapter_layers = nn.ModuleList(
                DecoderAdapter(dim=hidden_dim, adapter_dim=adapter_dim) for _ in range(dec_layers)
            )
        else:
            self.transformer_adapter_layers = None
        self.adapter_scale = adapter_scale
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.num_queries = num_queries
        self.query_feat = nn.Embedding(num_queries, hidden_dim)  # initial query content
        self.query_embed = nn.Embedding(num_queries, hidden_dim)  # query positional embedding
        self.num_feature_levels = 3
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                proj = Conv2d(in_channels, hidden_dim, kernel_size=1)
                c2_xavier_fill(proj)
                self.input_proj.append(proj)
            else:
                self.input_proj.append(nn.Sequential())
        self.num_classes = num_classes
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(
            input_dim=hidden_dim, hidden_dim=hidden_dim, output_dim=mask_dim, num_layers=3
        )

    @classmethod
    def from_config(cls, cfg: CfgNode, in_channels: int) -> dict:
        mf = cfg.MODEL.MASK_FORMER
        if mf.DEC_LAYERS < 1:
            raise ValueError(f"MODEL.MASK_FORMER.DEC_LAYERS must be >= 1; got {mf.DEC_LAYERS}")
        return {
            "in_channels": in_channels,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "hidden_dim": mf.HIDDEN_DIM,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "nheads": mf.NHEADS,
            "dim_feedforward": mf.DIM_FEEDFORWARD,
            # DEC_LAYERS counts predictions; the first one comes from the learnable queries
            "dec_layers": mf.DEC_LAYERS - 1,
            "pre_norm": mf.PRE_NORM,
            "enforce_input_project": mf.ENFORCE_INPUT_PROJ,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            **adapter_args(cfg),
        }

    def forward(
        self, x: list[Tensor], mask_features: Tensor, mask: Tensor | None = None
    ) -> tuple[dict, Tensor, Tensor]:
        """Decode queries.

        Args:
            x: 3 tensors Tensor[B, C_in, h_l, w_l] (coarsest first).
            mask_features: Tensor[B, E, h, w].
            mask: unused padding mask (inputs are padded images; kept for API parity).

        Returns:
            outputs: ``{"pred_logits": Tensor[B, Q, K+1], "pred_masks": Tensor[B, Q, h, w],
            "aux_outputs": [{"pred_logits", "pred_masks"}] * dec_layers}`` (the aux list
            holds the earlier predictions, first = from the learnable queries);
            mask_embed: Tensor[B, Q, E] of the last prediction;
            mask_features: the input ``mask_features``.
        """
        if len(x) != self.num_feature_levels:
            raise ValueError(f"decoder expects {self.num_feature_levels} levels; got {len(x)}")
        src, pos, size_list = [], [], []
        for i in range(self.num_feature_levels):
            size_list.append(x[i].shape[-2:])
            # B x C x h x w -> hw x B x C
            pos.append(self.pe_layer(x[i]).flatten(2).permute(2, 0, 1))
            level = self.input_proj[i](x[i]).flatten(2) + self.level_embed.weight[i][None, :, None]
            src.append(level.permute(2, 0, 1))
        bs = src[0].shape[1]
        query_embed = self.query_embed.weight.unsqueeze(1).repeat(1, bs, 1)  # Q x B x C
        output = self.query_feat.weight.unsqueeze(1).repeat(1, bs, 1)
        predictions_class, predictions_mask = [], []
        outputs_class, outputs_mask, mask_embed, attn_mask = self.forward_prediction_heads(
            output, mask_features, size_list[0]
        )
        predictions_class.append(outputs_class)
        predictions_mask.append(outputs_mask)
        for i in range(self.num_layers):
            level_index = i % self.num_feature_levels
            # a query whose mask is empty at this level attends everywhere instead of nowhere
            # (elementwise, so nothing is read back from the device)
            attn_mask = attn_mask & ~attn_mask.all(-1, keepdim=True)
            output = self.transformer_cross_attention_layers[i](
                output, src[level_index], memory_mask=attn_mask, pos=pos[level_index],
                query_pos=query_embed,
            )  # fmt: skip
            output = self.transformer_self_attention_layers[i](output, query_pos=query_embed)
            ffn_out = self.transformer_ffn_layers[i](output)
            if self.transformer_adapter_layers is not None:
                ffn_out = ffn_out + self.adapter_scale * self.transformer_adapter_layers[i](output)
            output = ffn_out
            outputs_class, outputs_mask, mask_embed, attn_mask = self.forward_prediction_heads(
                output, mask_features, size_list[(i + 1) % self.num_feature_levels]
            )
            predictions_class.append(outputs_class)
            predictions_mask.append(outputs_mask)
        outputs = {
            "pred_logits": predictions_class[-1],
            "pred_masks": predictions_mask[-1],
            "aux_outputs": [
                {"pred_logits": c, "pred_masks": m}
                for c, m in zip(predictions_class[:-1], predictions_mask[:-1], strict=True)
            ],
        }
        return outputs, mask_embed, mask_features

    def forward_prediction_heads(
        self, output: Tensor, mask_features: Tensor, attn_mask_target_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Class logits, mask logits and the next attention mask from the current queries.

        Args:
            output: Tensor[Q, B, C].
            mask_features: Tensor[B, E, h, w].
            attn_mask_target_size: ``(h_l, w_l)`` of the level attended next.

        Returns:
            Tensor[B, Q, K+1] class logits, Tensor[B, Q, h, w] mask logits, Tensor[B, Q, E]
            mask embeddings, bool Tensor[B*nH, Q, h_l*w_l] (True = masked out: mask prob < 0.5).
        """
        decoder_output = self.decoder_norm(output).transpose(0, 1)  # B x Q x C
        outputs_class = self.class_embed(decoder_output)
        mask_embed = self.mask_embed(decoder_output)
        # B x Q x E @ B x E x hw -> B x Q x h x w (einsum would add a layout copy)
        outputs_mask = torch.bmm(mask_embed, mask_features.flatten(2)).view(
            mask_embed.shape[0], -1, *mask_features.shape[-2:]
        )
        attn_mask = downsample_bilinear(outputs_mask, attn_mask_target_size)
        # B x Q x h_l x w_l -> B*nH x Q x h_l*w_l; sigmoid(x) < 0.5 <=> x < 0
        attn_mask = (attn_mask.sigmoid().flatten(2) < 0.5).detach()
        attn_mask = attn_mask.unsqueeze(1).expand(-1, self.num_heads, -1, -1).flatten(0, 1)
        return outputs_class, outputs_mask, mask_embed, attn_mask.contiguous()


def downsample_bilinear(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` for Tensor[B, C, H, W].

    When ``H / h`` and ``W / w`` are even integers ``k`` (the decoder's 128 -> 64/32/16 masks),
    output pixel ``i`` samples input coordinate ``k * i + k / 2 - 1/2``, halfway between pixels
    ``k * i + k / 2 - 1`` and ``k * i + k / 2``: the result is the mean of those 2 x 2 pixels,
    computed here from strided views (same values; ``F.interpolate`` on CPU first copies the whole
    input). Other sizes go to ``F.interpolate``.
    """
    (h_in, w_in), (h, w) = x.shape[-2:], size
    kh, kw = h_in // h, w_in // w
    if h * kh != h_in or w * kw != w_in or kh % 2 or kw % 2:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    top, bottom = x[..., kh // 2 - 1 :: kh, :], x[..., kh // 2 :: kh, :]
    rows = (top + bottom) * 0.5  # B x C x h x W
    left, right = rows[..., kw // 2 - 1 :: kw], rows[..., kw // 2 :: kw]
    return (left + right) * 0.5


def build_transformer_decoder(cfg: CfgNode, in_channels: int) -> nn.Module:
    """Transformer decoder named by ``MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME``."""
    name = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    return TRANSFORMER_DECODER_REGISTRY.get(name)(cfg, in_channels)
