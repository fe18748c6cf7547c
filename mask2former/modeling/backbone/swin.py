"""Swin Transformer backbone (Liu et al. 2021) in the detectron2 wrapping used by Mask2Former.

Shape shorthand: B images, H, W feature-map size of the current stage, L = H*W tokens,
C channels, N = ws*ws tokens per window, nW windows, nH heads.
Inputs of any size are padded internally (to the patch size, and per block to window
multiples); stage ``i`` returns ``res{i+2}`` at stride ``4 * 2**i`` after its own LayerNorm
``norm{i}``. Parameter names follow the released checkpoints (``layers.0.blocks.1.attn.qkv``...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mask2former.config import CfgNode
from mask2former.modeling.backbone.base import Backbone, ShapeSpec
from mask2former.modeling.registry import BACKBONE_REGISTRY

__all__ = ["DropPath", "SwinTransformer", "D2SwinTransformer"]


class DropPath(nn.Module):
    """Stochastic depth: zero a whole sample's residual branch with probability ``drop_prob``."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[B, ...] -> Tensor[B, ...] (identity in eval mode)."""
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Module):
    """Linear -> GELU -> dropout -> Linear -> dropout."""

    def __init__(self, *, in_features: int, hidden_features: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[..., C] -> Tensor[..., C]."""
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """Tensor[B, H, W, C] -> Tensor[B*nW, ws, ws, C] (H, W multiples of ws)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)


def window_reverse(windows: Tensor, window_size: int, h: int, w: int) -> Tensor:
    """Tensor[B*nW, ws, ws, C] -> Tensor[B, H, W, C]."""
    b = windows.shape[0] // ((h // window_size) * (w // window_size))
    x = windows.view(b, h // window_size, w // window_size, window_size, window_size, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learned relative position bias."""

    def __init__(
        self,
        *,
        dim: int,
        window_size: int,
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        coords = torch.stack(
            torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
        ).flatten(1)  # 2 x N
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # N x N x 2
        relative = relative + (window_size - 1)
        index = relative[:, :, 0] * (2 * window_size - 1) + relative[:, :, 1]
        self.register_buffer("relative_position_index", index.contiguous())
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.attn_drop_p = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> Tensor:
        """Tensor[nH, N, N]."""
        n = self.window_size * self.window_size
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, -1).permute(2, 0, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attention within windows.

        Args:
            x: Tensor[B*nW, N, C] window tokens.
            mask: Tensor[nW, N, N] additive mask (0 or -100) for shifted windows, or None.

        Returns:
            Tensor[B*nW, N, C].
        """
        bw, n, c = x.shape
        # B*nW x N x 3C -> 3 x B*nW x nH x N x C/nH
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias().unsqueeze(0)  # 1 x nH x N x N
        if mask is not None:
            nw = mask.shape[0]
            # B x nW x nH x N x N -> B*nW x nH x N x N
            bias = (bias.unsqueeze(0) + mask[None, :, None]).expand(bw // nw, -1, -1, -1, -1)
            bias = bias.reshape(bw, self.num_heads, n, n)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=bias.to(q.dtype),
            dropout_p=self.attn_drop_p if self.training else 0.0,
            scale=self.scale,
        )
        out = out.transpose(1, 2).reshape(bw, n, c)
        return self.proj_drop(self.proj(out))


class SwinTransformerBlock(nn.Module):
    """(Shifted-)window attention + MLP, both pre-norm residual branches with stochastic depth."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size {shift_size} must lie in [0, window_size={window_size})")
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim=dim, window_size=window_size, num_heads=num_heads, qkv_bias=qkv_bias,
            qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop,
        )  # fmt: skip
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), drop=drop)

    def forward(self, x: Tensor, h: int, w: int, attn_mask: Tensor | None) -> Tensor:
        """Tensor[B, L, C] (L = h*w) -> Tensor[B, L, C]; ``attn_mask`` Tensor[nW, N, N]."""
        b, length, c = x.shape
        if length != h * w:
            raise ValueError(f"Swin block got {length} tokens for a {h}x{w} map")
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        ws = self.window_size
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        else:
            attn_mask = None
        windows = window_partition(x, ws).reshape(-1, ws * ws, c)  # B*nW x N x C
        windows = self.attn(windows, mask=attn_mask)
        x = window_reverse(windows.view(-1, ws, ws, c), ws, hp, wp)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = x[:, :h, :w, :].reshape(b, h * w, c)
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat + LayerNorm + Linear(4C -> 2C): halves the resolution."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        """Tensor[B, h*w, C] -> Tensor[B, ceil(h/2)*ceil(w/2), 2C]."""
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat(
            [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1
        )
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class BasicLayer(nn.Module):
    """One Swin stage: ``depth`` blocks alternating regular / shifted windows, then merging."""

    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
        drop: float,
        attn_drop: float,
        drop_path: list[float],
        downsample: bool,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim=dim,
                num_heads=num_heads,
                window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                drop=drop,
                attn_drop=attn_drop,
                drop_path=drop_path[i],
            )  # fmt: skip
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim=dim) if downsample else None

    def shift_mask(self, h: int, w: int, device: torch.device) -> Tensor:
        """Tensor[nW, N, N]: -100 between tokens that came from different image regions."""
        ws, shift = self.window_size, self.shift_size
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        region = torch.zeros((1, hp, wp, 1), device=device)
        count = 0
        for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                region[:, hs, wsl, :] = count
                count += 1
        windows = window_partition(region, ws).reshape(-1, ws * ws)
        mask = windows.unsqueeze(1) - windows.unsqueeze(2)
        return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)

    def forward(self, x: Tensor, h: int, w: int) -> tuple[Tensor, Tensor, int, int]:
        """Tensor[B, h*w, C] -> (stage output Tensor[B, h*w, C], next input, next h, next w)."""
        attn_mask = self.shift_mask(h, w, x.device).to(x.dtype)
        for block in self.blocks:
            x = block(x, h, w, attn_mask)
        if self.downsample is None:
            return x, x, h, w
        return x, self.downsample(x, h, w), (h + 1) // 2, (w + 1) // 2


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection (conv with kernel = stride = patch size) + LayerNorm."""

    def __init__(
        self, *, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96, norm: bool = True
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if norm else None

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[B, 3, H, W] -> Tensor[B, C, ceil(H/p), ceil(W/p)] (input padded right/bottom)."""
        _, _, h, w = x.shape
        p = self.patch_size
        x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))
        x = self.proj(x)
        if self.norm is not None:
            hh, ww = x.shape[2:]
            x = self.norm(x.flatten(2).transpose(1, 2))
            x = x.transpose(1, 2).reshape(-1, self.embed_dim, hh, ww)
        return x


class SwinTransformer(nn.Module):
    """Patch embedding + 4 stages; returns the normed output of every stage in ``out_indices``."""

    def __init__(
        self,
        *,
        pretrain_img_size: int = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        ape: bool = False,
        patch_norm: bool = True,
        out_indices: tuple[int, ...] = (0, 1, 2, 3),
    ) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"Swin depths {depths} and num_heads {num_heads} differ in length")
        self.num_layers = len(depths)
        self.ape = ape
        self.out_indices = tuple(out_indices)
        self.patch_embed = PatchEmbed(
            patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, norm=patch_norm
        )
        if ape:
            grid = pretrain_img_size // patch_size
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, grid, grid))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.layers = nn.ModuleList()
        for i in range(self.num_layers):
            self.layers.append(
                BasicLayer(
                    dim=embed_dim * 2**i,
                    depth=depths[i],
                    num_heads=num_heads[i],
                    window_size=window_size,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                    downsample=i < self.num_layers - 1,
                )  # fmt: skip
            )
        self.num_features = [embed_dim * 2**i for i in range(self.num_layers)]
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Tensor[B, 3, H, W] -> ``{"res{i+2}": Tensor[B, C_i, H/2**(i+2), W/2**(i+2)]}``."""
        x = self.patch_embed(x)
        h, w = x.shape[2:]
        if self.ape:
            pos = F.interpolate(self.absolute_pos_embed, size=(h, w), mode="bicubic")
            x = x + pos
        x = self.pos_drop(x.flatten(2).transpose(1, 2))  # B x C x h x w -> B x hw x C
        outs = {}
        for i, layer in enumerate(self.layers):
            x_out, x, h_next, w_next = layer(x, h, w)
            if i in self.out_indices:
                x_out = getattr(self, f"norm{i}")(x_out)
                # B x hw x C -> B x C x h x w
                outs[f"res{i + 2}"] = (
                    x_out.view(-1, h, w, self.num_features[i]).permute(0, 3, 1, 2).contiguous()
                )
            h, w = h_next, w_next
        return outs


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


@BACKBONE_REGISTRY.register()
class D2SwinTransformer(SwinTransformer, Backbone):
    """Swin Transformer as a backbone built from ``cfg.MODEL.SWIN``."""

    def __init__(self, cfg: CfgNode, input_shape: ShapeSpec) -> None:
        s = cfg.MODEL.SWIN
        names = ["res2", "res3", "res4", "res5"]
        for name in s.OUT_FEATURES:
            if name not in names:
                raise ValueError(f"MODEL.SWIN.OUT_FEATURES has {name!r}; available: {names}")
        if s.USE_CHECKPOINT:
            raise ValueError("MODEL.SWIN.USE_CHECKPOINT is not supported; set it to False")
        super().__init__(
            pretrain_img_size=s.PRETRAIN_IMG_SIZE,
            patch_size=s.PATCH_SIZE,
            in_chans=input_shape.channels,
            embed_dim=s.EMBED_DIM,
            depths=tuple(s.DEPTHS),
            num_heads=tuple(s.NUM_HEADS),
            window_size=s.WINDOW_SIZE,
            mlp_ratio=s.MLP_RATIO,
            qkv_bias=s.QKV_BIAS,
            qk_scale=s.QK_SCALE,
            drop_rate=s.DROP_RATE,
            attn_drop_rate=s.ATTN_DROP_RATE,
            drop_path_rate=s.DROP_PATH_RATE,
            ape=s.APE,
            patch_norm=s.PATCH_NORM,
        )
        self._out_features = list(s.OUT_FEATURES)
        self._out_feature_strides = {f"res{i + 2}": 4 * 2**i for i in range(self.num_layers)}
        self._out_feature_channels = {
            f"res{i + 2}": self.num_features[i] for i in range(self.num_layers)
        }

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Tensor[B, 3, H, W] -> ``{name: Tensor[B, C, H/stride, W/stride]}`` for OUT_FEATURES."""
        if x.dim() != 4:
            raise ValueError(f"SwinTransformer takes Tensor[B, C, H, W]; got {tuple(x.shape)}")
        outs = super().forward(x)
        return {k: v for k, v in outs.items() if k in self._out_features}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }

    @property
    def size_divisibility(self) -> int:
        return 32
