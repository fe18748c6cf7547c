"""Multi-scale deformable-attention pixel decoder of Mask2Former, with InstaFormer adapters.

Shape shorthand: B images, C conv width (``CONVS_DIM``), L = 3 encoder levels (res5, res4, res3
in that order), S = sum of h_l * w_l tokens over the encoder levels, h, w = padded size / 4.
Deformable encoder over res3-res5, then an FPN step to res2 (stride 4) and a 1x1 conv to the
mask features (docs/reference.md [IF 1.1]; encoder adapters [IF 1.2.2]).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mask2former.config import CfgNode
from mask2former.modeling.adapters import EncoderAdapter, adapter_args
from mask2former.modeling.backbone.base import ShapeSpec
from mask2former.modeling.backbone.resnet import Conv2d, c2_xavier_fill, get_norm
from mask2former.modeling.configurable import configurable
from mask2former.modeling.pixel_decoder.deform_attn import MSDeformAttn
from mask2former.modeling.registry import PIXEL_DECODER_REGISTRY
from mask2former.modeling.transformer_decoder.position_encoding import PositionEmbeddingSine

__all__ = [
    "MSDeformAttnTransformerEncoderLayer",
    "MSDeformAttnTransformerEncoder",
    "MSDeformAttnTransformerEncoderOnly",
    "MSDeformAttnPixelDecoder",
    "build_pixel_decoder",
]


class MSDeformAttnTransformerEncoderLayer(nn.Module):
    """Post-norm layer: deformable self-attention, then FFN (+ optional adapter on the FFN input).

    With an adapter: ``out = LN(x + FFN(x)) + adapter_scale * adapter(x)``.
    """

    def __init__(
        self,
        *,
        d_model: int = 256,
        d_ffn: int = 1024,
        dropout: float = 0.1,
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
        adapter_dim: int = 0,
        adapter_scale: float = 0.1,
    ) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(
            d_model=d_model, n_levels=n_levels, n_heads=n_heads, n_points=n_points
        )
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.adapter = EncoderAdapter(dim=d_model, adapter_dim=adapter_dim) if adapter_dim else None
        self.adapter_scale = adapter_scale

    def forward(
        self,
        src: Tensor,
        pos: Tensor,
        reference_points: Tensor,
        spatial_shapes: list[tuple[int, int]],
        level_start_index: Tensor,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Tensor[B, S, C] (pos Tensor[B, S, C], refs Tensor[B, S, L, 2]) -> Tensor[B, S, C].

        ``spatial_shapes`` holds ``(h, w)`` per level as Python ints.
        """
        attn = self.self_attn(
            src + pos, reference_points, src, spatial_shapes, level_start_index, padding_mask
        )
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout2(F.relu(self.linear1(src), inplace=True)))
        out = self.norm2(src + self.dropout3(ffn))
        if self.adapter is not None:
            out = out + self.adapter_scale * self.adapter(src)
        return out


class MSDeformAttnTransformerEncoder(nn.Module):
    """A stack of encoder layers sharing the per-level reference points."""

    def __init__(self, layers: list[MSDeformAttnTransformerEncoderLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    @staticmethod
    def get_reference_points(
        spatial_shapes: list[tuple[int, int]], valid_ratios: Tensor, device: torch.device
    ) -> Tensor:
        """Pixel centres of every level in normalised coordinates.

        Args:
            spatial_shapes: ``(h, w)`` per level.
            valid_ratios: Tensor[B, L, 2], unpadded fraction ``(x, y)`` of each level.

        Returns:
            Tensor[B, S, L, 2], ``(x, y)`` of each token, expressed on every level.
        """
        refs = []
        for lvl, (h, w) in enumerate(spatial_shapes):
            ref_y, ref_x = torch.meshgrid(
                torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device),
                torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device),
                indexing="ij",
            )
            ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * h)
            ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * w)
            refs.append(torch.stack((ref_x, ref_y), -1))
        reference_points = torch.cat(refs, 1)
        return reference_points[:, :, None] * valid_ratios[:, None]

    def forward(
        self,
        src: Tensor,
        spatial_shapes: list[tuple[int, int]],
        level_start_index: Tensor,
        valid_ratios: Tensor,
        pos: Tensor,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Tensor[B, S, C] -> Tensor[B, S, C]; ``spatial_shapes`` ``(h, w)`` per level (ints)."""
        reference_points = self.get_reference_points(spatial_shapes, valid_ratios, src.device)
        for layer in self.layers:
            src = layer(src, pos, reference_points, spatial_shapes, level_start_index, padding_mask)
        return src


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """Flattens the levels, adds level embeddings and runs the deformable encoder."""

    def __init__(
        self,
        *,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        num_feature_levels: int = 4,
        enc_n_points: int = 4,
        adapter_dim: int = 0,
        adapter_scale: float = 0.1,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self.encoder = MSDeformAttnTransformerEncoder(
            [
                MSDeformAttnTransformerEncoderLayer(
                    d_model=d_model,
                    d_ffn=dim_feedforward,
                    dropout=dropout,
                    n_levels=num_feature_levels,
                    n_heads=nhead,
                    n_points=enc_n_points,
                    adapter_dim=adapter_dim,
                    adapter_scale=adapter_scale,
                )  # fmt: skip
                for _ in range(num_encoder_layers)
            ]
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, (MSDeformAttn, EncoderAdapter)):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(
        self, srcs: list[Tensor], pos_embeds: list[Tensor]
    ) -> tuple[Tensor, list[tuple[int, int]], Tensor]:
        """Encode the levels jointly.

        Args:
            srcs: L tensors Tensor[B, C, h_l, w_l] (lowest resolution first).
            pos_embeds: L tensors Tensor[B, C, h_l, w_l].

        Returns:
            memory Tensor[B, S, C], spatial_shapes ``(h, w)`` per level as Python ints (shapes
            never travel as tensors, so nothing is read back from the device and
            ``torch.export`` sees static sizes), level_start_index LongTensor[L].
        """
        src_flatten, pos_flatten, shapes = [], [], []
        for lvl, (src, pos) in enumerate(zip(srcs, pos_embeds, strict=True)):
            shapes.append((int(src.shape[2]), int(src.shape[3])))
            # B x C x h x w -> B x hw x C
            src_flatten.append(src.flatten(2).transpose(1, 2))
            pos_flatten.append(
                pos.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
            )
        src_flatten = torch.cat(src_flatten, 1)
        pos_flatten = torch.cat(pos_flatten, 1)
        device = src_flatten.device
        starts = [0]
        for h, w in shapes[:-1]:
            starts.append(starts[-1] + h * w)
        level_start_index = torch.tensor(starts, dtype=torch.long, device=device)
        # inputs are never padded inside the pixel decoder: every level is fully valid
        valid_ratios = torch.ones(
            src_flatten.shape[0], len(srcs), 2, dtype=src_flatten.dtype, device=device
        )
        memory = self.encoder(src_flatten, shapes, level_start_index, valid_ratios, pos_flatten)
        return memory, shapes, level_start_index


@PIXEL_DECODER_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """Deformable encoder on the coarse levels + FPN to stride ``common_stride``.

    Parameter names follow the reference: ``input_proj.{l}``, ``transformer.*``,
    ``mask_features``, ``adapter_{k}`` (FPN lateral convs, not InstaFormer adapters) and
    ``layer_{k}`` (FPN output convs).
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: dict[str, ShapeSpec],
        transformer_dropout: float,
        transformer_nheads: int,
        transformer_dim_feedforward: int,
        transformer_enc_layers: int,
        transformer_enc_n_points: int = 4,
        conv_dim: int,
        mask_dim: int,
        norm: str = "GN",
        transformer_in_features: list[str],
        common_stride: int,
        adapter_dim: int = 0,
        adapter_scale: float = 0.1,
    ) -> None:
        super().__init__()
        by_stride = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in by_stride]  # finest first, e.g. res2..res5
        feature_channels = [v.channels for _, v in by_stride]
        for name in transformer_in_features:
            if name not in input_shape:
                raise ValueError(
                    f"deformable encoder input {name!r} is not among the head inputs "
                    f"{sorted(input_shape)}"
                )
        enc_shape = sorted(
            ((k, v) for k, v in input_shape.items() if k in transformer_in_features),
            key=lambda kv: kv[1].stride,
        )
        self.transformer_in_features = [k for k, _ in enc_shape]  # finest first
        enc_channels = [v.channels for _, v in enc_shape]
        self.transformer_feature_strides = [v.stride for _, v in enc_shape]
        self.transformer_num_feature_levels = len(self.transformer_in_features)
        # coarsest level first
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
            for c in enc_channels[::-1]
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim,
            dropout=transformer_dropout,
            nhead=transformer_nheads,
            dim_feedforward=transformer_dim_feedforward,
            num_encoder_layers=transformer_enc_layers,
            num_feature_levels=self.transformer_num_feature_levels,
            enc_n_points=transformer_enc_n_points,
            adapter_dim=adapter_dim,
            adapter_scale=adapter_scale,
        )
        self.pe_layer = PositionEmbeddingSine(num_pos_feats=conv_dim // 2, normalize=True)
        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1, stride=1, padding=0)
        c2_xavier_fill(self.mask_features)
        self.maskformer_num_feature_levels = 3  # levels handed to the transformer decoder
        self.common_stride = common_stride
        stride = min(self.transformer_feature_strides)
        self.num_fpn_levels = int(math.log2(stride) - math.log2(common_stride))
        use_bias = norm == ""
        lateral_convs, output_convs = [], []
        for idx, in_channels in enumerate(feature_channels[: self.num_fpn_levels]):
            lateral = Conv2d(
                in_channels, conv_dim, kernel_size=1, bias=use_bias, norm=get_norm(norm, conv_dim)
            )
            output = Conv2d(
                conv_dim, conv_dim, kernel_size=3, stride=1, padding=1, bias=use_bias,
                norm=get_norm(norm, conv_dim), activation=F.relu,
            )  # fmt: skip
            c2_xavier_fill(lateral)
            c2_xavier_fill(output)
            self.add_module(f"adapter_{idx + 1}", lateral)
            self.add_module(f"layer_{idx + 1}", output)
            lateral_convs.append(lateral)
            output_convs.append(output)
        # coarsest FPN level first
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "conv_dim": head.CONVS_DIM,
            "mask_dim": head.MASK_DIM,
            "norm": head.NORM,
            "transformer_dropout": cfg.MODEL.MASK_FORMER.DROPOUT,
            "transformer_nheads": cfg.MODEL.MASK_FORMER.NHEADS,  # as the reference
            "transformer_dim_feedforward": 1024,  # fixed in the reference's pixel decoder
            "transformer_enc_layers": head.TRANSFORMER_ENC_LAYERS,
            "transformer_enc_n_points": 4,  # fixed in the reference's pixel decoder
            "transformer_in_features": list(head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES),
            "common_stride": head.COMMON_STRIDE,
            **adapter_args(cfg),
        }

    def forward_features(self, features: dict[str, Tensor]) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Decode backbone features.

        Args:
            features: ``{name: Tensor[B, C_name, H/stride, W/stride]}`` from the backbone.

        Returns:
            mask_features Tensor[B, mask_dim, h, w]; the encoder output at the coarsest level
            Tensor[B, C, H/32, W/32]; and 3 multi-scale features Tensor[B, C, ., .] for the
            transformer decoder (strides 32, 16, 8).
        """
        srcs, pos = [], []
        for idx, name in enumerate(self.transformer_in_features[::-1]):
            x = features[name].float()
            srcs.append(self.input_proj[idx](x))
            pos.append(self.pe_layer(x))
        memory, shapes, _ = self.transformer(srcs, pos)
        b = memory.shape[0]
        out = []
        for z, (h, w) in zip(memory.split([h * w for h, w in shapes], dim=1), shapes, strict=True):
            # B x hw x C -> B x C x h x w
            out.append(z.transpose(1, 2).reshape(b, -1, h, w))
        for idx, name in enumerate(self.in_features[: self.num_fpn_levels][::-1]):
            cur = self.lateral_convs[idx](features[name].float())
            y = cur + F.interpolate(
                out[-1], size=cur.shape[-2:], mode="bilinear", align_corners=False
            )
            out.append(self.output_convs[idx](y))
        multi_scale_features = out[: self.maskformer_num_feature_levels]
        return self.mask_features(out[-1]), out[0], multi_scale_features


def build_pixel_decoder(cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    """Pixel decoder named by ``MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME``."""
    name = cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    model = PIXEL_DECODER_REGISTRY.get(name)(cfg, input_shape)
    if not callable(getattr(model, "forward_features", None)):
        raise ValueError(f"pixel decoder {name!r} has no forward_features method")
    return model
