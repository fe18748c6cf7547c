"""timm models as trunks: built by name (random or pretrained, with a clear error offline),
their leading parameter groups frozen, their first convolution widened for extra input channels.

Shape shorthand: O output channels of a convolution, C input channels, k kernel side.

timm is imported inside the functions, so that importing the model packages stays as fast as
before for configs that use the project's own ResNet and Swin.

Pretrained weights (``pretrained=True``) come from timm's own source for the model, in this
order: ``pretrained_file`` when given (a local file, or an ``https://`` URL fetched by
:mod:`mask2former.utils.download`); else the model's Hugging Face hub repository, through timm and
``huggingface_hub`` (their cache, ``$HF_HUB_CACHE``; their timeouts, ``HF_HUB_ETAG_TIMEOUT`` and
``HF_HUB_DOWNLOAD_TIMEOUT``, 10 s each by default; ``HF_HUB_OFFLINE=1`` reads the cache only);
else the model's plain URL, fetched by :mod:`mask2former.utils.download` (timeouts, atomic files)
instead of ``torch.hub``, which has no timeout.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from torch import nn

from mask2former.config import ConfigError
from mask2former.utils import download

__all__ = [
    "create_timm_model",
    "freeze_leading_groups",
    "patch_size",
    "pretrained_mean_std",
    "widen_first_conv",
]


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def _pretrained_cfg(name: str, key: str) -> Any:
    """timm's pretrained config of ``name`` (``arch`` or ``arch.tag``), or None without weights."""
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(name):
        arch = name.split(".")[0]
        raise ConfigError(
            f"{key}.NAME {name!r} is not a timm model (timm {timm.__version__}); list them with "
            f"python -c \"import timm; print(timm.list_models('*{arch[:8]}*'))\""
        )
    try:
        return get_pretrained_cfg(name)
    except RuntimeError as err:  # timm's answer to an unknown ".tag"
        raise ConfigError(
            f'{key}.NAME {name!r}: {_first_line(err)} Tags with weights: python -c "import timm; '
            f"print(timm.list_pretrained('{name.split('.')[0]}*'))\""
        ) from err


def _weights_source(name: str, pretrained_cfg: Any, pretrained_file: str, key: str) -> str:
    """The local weight file to load instead of timm's hub ("" = the hub through timm)."""
    if pretrained_file:
        path = download.fetch(pretrained_file)
        if not os.path.isfile(path):
            raise ConfigError(f"{key}.PRETRAINED_FILE {pretrained_file!r}: no such file")
        return path
    if pretrained_cfg is None or not (pretrained_cfg.hf_hub_id or pretrained_cfg.url):
        raise ConfigError(
            f"{key}.PRETRAINED is True but timm has no pretrained weights for {name!r}; pick a "
            f"tagged name from timm.list_pretrained('{name.split('.')[0]}*') or set "
            f"{key}.PRETRAINED_FILE"
        )
    if pretrained_cfg.hf_hub_id:
        return ""
    return download.fetch(pretrained_cfg.url)


def _hub_error(name: str, hub_id: str, key: str, err: BaseException) -> download.DownloadError:
    from huggingface_hub import constants

    return download.DownloadError(
        f"cannot fetch the pretrained weights of timm model {name!r} ({key}.PRETRAINED True) from "
        f"the Hugging Face hub repository {hub_id}: {_first_line(err)} Without network, fetch them "
        f"once where there is network (python -c \"import timm; timm.create_model('{name}', "
        f'pretrained=True)") and copy the Hugging Face cache folder ({constants.HF_HUB_CACHE}; '
        f"set HF_HUB_CACHE to use another) here, or set {key}.PRETRAINED_FILE to the weight file "
        f"(model.safetensors of {hub_id})."
    )


def create_timm_model(
    name: str,
    *,
    pretrained: bool = False,
    pretrained_file: str = "",
    drop_path: float = 0.0,
    img_size: int = 0,
    key: str = "MODEL.TIMM",
) -> nn.Module:
    """``timm.create_model(name, ...)`` without its classifier (``reset_classifier(0)``: the
    model's forward returns pooled features Tensor[B, F]).

    Models timm marks as taking a fixed input size (ViTs, Swin) are built with
    ``dynamic_img_size=True``, so that their position embeddings are resampled to each input's
    token grid.

    Args:
        name: a ``timm.list_models()`` name, optionally with a ``.tag`` choosing the weights.
        pretrained: load pretrained weights (module docstring for the source).
        pretrained_file: local weight file (or ``https://`` URL) loaded instead of the hub;
            only with ``pretrained``.
        drop_path: stochastic-depth rate (timm's ``drop_path_rate``); 0 leaves timm's default.
        img_size: side (pixels) the position embeddings are built for (timm resamples
            pretrained ones to it); 0 = the model's own.
        key: config prefix named in error messages.

    Raises:
        ConfigError: unknown name or tag, no weights for it, a missing ``pretrained_file``, a
            fixed-input-size model that cannot resample its position embeddings, or a file
            that does not hold the model's weights.
        DownloadError: the weights could not be fetched (one line saying how to pre-fetch them).
    """
    import timm

    pretrained_cfg = _pretrained_cfg(name, key)
    if pretrained_file and not pretrained:
        raise ConfigError(f"{key}.PRETRAINED_FILE is set but {key}.PRETRAINED is False")
    kwargs: dict[str, Any] = {}
    if drop_path > 0:
        kwargs["drop_path_rate"] = drop_path
    if img_size > 0:
        kwargs["img_size"] = img_size
    if pretrained_cfg is not None and pretrained_cfg.fixed_input_size:
        kwargs["dynamic_img_size"] = True
    file = _weights_source(name, pretrained_cfg, pretrained_file, key) if pretrained else ""
    if file:
        kwargs["pretrained_cfg_overlay"] = {"file": file}
    try:
        # with the pretrained classifier in place timm loads the weights strictly (a file of
        # another model fails instead of leaving random weights); it is removed afterwards
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as err:
        if "dynamic_img_size" not in str(err):
            raise
        raise ConfigError(
            f"{key}.NAME {name!r} takes a fixed input size and cannot resample its position "
            "embeddings to other sizes (no dynamic_img_size in timm): choose another model"
        ) from err
    except (OSError, RuntimeError) as err:
        if file:
            source = f"{key}.PRETRAINED_FILE {file}" if pretrained_file else f"{file} (timm's URL)"
            raise ConfigError(
                f"{source} does not hold weights of timm model {name!r}: {_first_line(err)}"
            ) from err
        if isinstance(err, OSError):
            raise _hub_error(name, pretrained_cfg.hf_hub_id, key, err) from err
        raise
    model.reset_classifier(0)
    return model


def freeze_leading_groups(model: nn.Module, count: int) -> None:
    """Freeze the first ``count`` of timm's coarse parameter groups (-1: every parameter).

    Group 0 is the stem (patch embedding, position embedding and tokens for a ViT), then one
    group per stage (hierarchical models) or per block (ViTs), as ``model.group_matcher``
    (timm's layer-decay grouping) defines them. Frozen parameters stop requiring gradients and
    the BatchNorm layers among them become frozen BatchNorm (fixed statistics).

    Raises:
        ConfigError: ``count`` < -1, or the model has no ``group_matcher`` and ``count`` > 0.
    """
    if count < -1:
        raise ConfigError(f"MODEL.TIMM.FREEZE_AT must be -1, 0 or a group count, got {count}")
    if count == 0:
        return
    if count == -1:
        frozen = {n for n, _ in model.named_parameters()}
    else:
        from timm.models import group_parameters

        if not hasattr(model, "group_matcher"):
            raise ConfigError(
                f"MODEL.TIMM.FREEZE_AT {count}: timm model {type(model).__name__} defines no "
                "parameter groups (group_matcher); use 0 or -1"
            )
        groups = group_parameters(model, model.group_matcher(coarse=True))
        frozen = {n for gid in sorted(groups)[:count] for n in groups[gid]}
    for param_name, param in model.named_parameters():
        if param_name in frozen:
            param.requires_grad = False
    _freeze_batch_norms(model, frozen)


def _freeze_batch_norms(model: nn.Module, frozen: set[str]) -> None:
    """Replace each BatchNorm whose parameters are all in ``frozen`` by timm's frozen copy."""
    from timm.layers import freeze_batch_norm_2d

    targets = [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and all(f"{name}.{p}" in frozen for p, _ in m.named_parameters())
    ]
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, freeze_batch_norm_2d(getattr(parent, child)))


def patch_size(model: nn.Module) -> int | None:
    """The patch side of a model with a square ``patch_embed`` (ViT family), else None."""
    embed = getattr(model, "patch_embed", None)
    size = getattr(embed, "patch_size", None)
    if size is None:
        return None
    side = (size, size) if isinstance(size, int) else tuple(size)
    if side[0] != side[1]:
        raise ValueError(f"{type(model).__name__}: non-square patches {side} are not supported")
    return int(side[0])


def pretrained_mean_std(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """RGB ``(mean, std)`` on the 0-1 scale the model's weights were trained with."""
    cfg = model.pretrained_cfg
    return tuple(cfg["mean"]), tuple(cfg["std"])


def widen_first_conv(model: nn.Module, extra_channels: int) -> nn.Module:
    """Prepend ``extra_channels`` input channels to the model's first convolution, in place.

    The convolution is the one timm's ``pretrained_cfg["first_conv"]`` names (a CNN's stem, a
    ViT's patch projection ``patch_embed.proj``). Its RGB filters stay as they are, behind the new
    channels; each new channel starts from the mean of the three RGB filters, i.e. the filter a
    grey image of the same value would meet. An input ``[extra..., R, G, B]`` thus meets the
    pretrained RGB filters unchanged, and each extra channel (a binary mask) adds the response
    of a grey image showing it.

    Weight: Tensor[O, 3, k, k] -> Tensor[O, extra + 3, k, k].

    Raises:
        ValueError: timm names no single first convolution, or it does not take 3 channels.
    """
    conv_name = model.pretrained_cfg.get("first_conv")
    if not isinstance(conv_name, str):
        raise ValueError(
            f"timm model {type(model).__name__} names no single first convolution "
            f"(pretrained_cfg first_conv = {conv_name!r}); it cannot take extra input channels"
        )
    conv = model.get_submodule(conv_name)
    if not isinstance(conv, nn.Conv2d) or conv.in_channels != 3 or conv.groups != 1:
        raise ValueError(f"{conv_name} of {type(model).__name__} is not a 3-channel Conv2d: {conv}")
    weight = conv.weight.detach()  # O x 3 x k x k
    grey = weight.mean(dim=1, keepdim=True).expand(-1, extra_channels, -1, -1)
    wide = copy.deepcopy(conv)
    wide.in_channels = 3 + extra_channels
    wide.weight = nn.Parameter(torch.cat([grey, weight], dim=1).contiguous())
    parent_name, _, child = conv_name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, wide)
    return model
