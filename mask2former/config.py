"""Configuration: the detectron2 defaults Mask2Former relies on, and Mask2Former's own keys.

``CfgNode`` is fvcore's yacs node with two additions that detectron2 users expect: unknown keys
and missing ``_BASE_`` files fail with an error naming the key and the file, and merged values
of the wrong type name the key. Every key carries a one-line comment; units are given where a
key has one. :func:`get_base_cfg` + :func:`add_maskformer2_config` build a plain Mask2Former; a
package that extends it adds its own keys on top (and reads them itself).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import yaml
from fvcore.common.config import BASE_KEY
from fvcore.common.config import CfgNode as _FvcoreCfgNode

__all__ = [
    "CfgNode",
    "ConfigError",
    "check_training_cfg",
    "get_base_cfg",
    "add_maskformer2_config",
    "AdapterSettings",
    "adapter_settings",
    "register_adapter_settings",
]


class ConfigError(KeyError):
    """A config file or override names an unknown key, a missing file, or a bad value."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


class CfgNode(_FvcoreCfgNode):
    """fvcore ``CfgNode`` whose merge errors name the offending key and file.

    ``REMOVED_KEYS`` maps a full key that this project dropped to ``(accepted_value, reason)``:
    a file or override that sets the key to ``accepted_value`` (the only behaviour the key ever
    had in practice) is accepted with the key ignored; any other value is an error giving the
    reason.
    """

    REMOVED_KEYS: dict[str, tuple[Any, str]] = {}

    @classmethod
    def load_yaml_with_base(cls, filename: str, allow_unsafe: bool = False) -> dict[str, Any]:
        """Load a yaml file and, recursively, the files named by its ``_BASE_`` key.

        ``allow_unsafe`` is accepted for fvcore compatibility and ignored: configs are plain data.

        Raises:
            ConfigError: a missing, unreadable, empty or non-mapping file, a key given twice in
                one mapping, a ``_BASE_`` that is not a path (or list of paths) or that names a
                file already being loaded (a cycle); the message names the file and the key.
        """
        return _load_with_base(filename, ())

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        """Merge a yaml file (following ``_BASE_``) into this config."""
        loaded = self.load_yaml_with_base(cfg_filename, allow_unsafe=allow_unsafe)
        _drop_removed_keys(loaded, "", f"config file {cfg_filename}")
        loaded = type(self)(loaded)
        try:
            self.merge_from_other_cfg(loaded)
        except (KeyError, ValueError, AssertionError) as err:
            raise ConfigError(f"{_strip(err)} (in config file {cfg_filename})") from err

    def merge_from_list(self, cfg_list: list[str]) -> None:
        """Merge ``["KEY", "VALUE", ...]`` overrides (the trailing command-line arguments)."""
        if len(cfg_list) % 2 != 0:
            raise ConfigError(
                f"overrides must be KEY VALUE pairs; got an odd number of items: {cfg_list}"
            )
        kept: list[str] = []
        for key, value in zip(cfg_list[0::2], cfg_list[1::2], strict=True):
            if key in self.REMOVED_KEYS:
                _check_removed(key, _decode(value), "command-line overrides")
                continue
            kept += [key, value]
        cfg_list = kept
        for index in range(0, len(cfg_list), 2):
            key = cfg_list[index]
            node: Any = self
            for part in key.split("."):
                if not isinstance(node, _FvcoreCfgNode) or part not in node:
                    raise ConfigError(f"unknown config key in command-line overrides: {key}")
                node = node[part]
            value = _decode(cfg_list[index + 1])
            if type(node) is float and type(value) is int:  # "0" for a float key means 0.0
                cfg_list[index + 1] = repr(float(value))
        try:
            super().merge_from_list(cfg_list)
        except (KeyError, ValueError, AssertionError) as err:
            raise ConfigError(f"{_strip(err)} (in command-line overrides)") from err


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice (yaml keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"key {key!r} is given twice in config file {self.name} (lines {seen[key]} "
                    f"and {line}); yaml would silently keep only the second"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _read_yaml(filename: str) -> dict[str, Any]:
    """One yaml file as a dict (no ``_BASE_`` handling); every failure is a ConfigError."""
    if not os.path.isfile(filename):
        raise ConfigError(f"config file not found: {filename}")
    try:
        with open(filename, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {filename} is not UTF-8 text: {err}") from err
    except OSError as err:
        raise ConfigError(f"cannot read config file {filename}: {err}") from err
    loader = _UniqueKeyLoader(text)
    loader.name = filename
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {filename} is not valid yaml: {err}") from err
    finally:
        loader.dispose()
    if data is None:
        raise ConfigError(f"config file {filename} is empty")
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {filename} holds a {type(data).__name__}, not a mapping of keys to values"
        )
    return data


def _merge_into(a: dict[str, Any], b: dict[str, Any], filename: str) -> None:
    """Merge dict ``a`` into ``b`` (values of ``a`` win), in place."""
    for key, value in a.items():
        if isinstance(value, dict) and key in b:
            if not isinstance(b[key], dict):
                raise ConfigError(
                    f"config file {filename} gives key {key} sub-keys, but its _BASE_ sets it "
                    f"to the value {b[key]!r}"
                )
            _merge_into(value, b[key], filename)
        else:
            b[key] = value


def _load_with_base(filename: str, chain: tuple[str, ...]) -> dict[str, Any]:
    real = os.path.realpath(filename)
    if real in chain:
        cycle = " -> ".join([*chain[chain.index(real) :], real])
        raise ConfigError(f"circular _BASE_ in config files: {cycle}")
    data = _read_yaml(filename)
    if BASE_KEY not in data:
        return data
    bases = data.pop(BASE_KEY)
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(
            f"_BASE_ in config file {filename} must be a file path or a list of paths, got "
            f"{bases!r}"
        )
    merged: dict[str, Any] = {}
    for base in bases:
        path = os.path.expanduser(base)
        if not os.path.isabs(path):  # relative to the file that names it, as detectron2
            path = os.path.join(os.path.dirname(filename), path)
        try:
            _merge_into(_load_with_base(path, (*chain, real)), merged, filename)
        except ConfigError as err:
            if "circular _BASE_" in str(err):
                raise
            raise ConfigError(f"{err} (named by _BASE_ in {filename})") from err
    _merge_into(data, merged, filename)
    return merged


def _decode(value: Any) -> Any:
    return _FvcoreCfgNode._decode_cfg_value(value) if isinstance(value, str) else value


def _check_removed(key: str, value: Any, where: str) -> None:
    accepted, reason = CfgNode.REMOVED_KEYS[key]
    if value != accepted:
        raise ConfigError(
            f"config key {key} is not supported (in {where}): {reason} Only {accepted!r} is "
            f"accepted, and it is ignored; got {value!r}."
        )


def _drop_removed_keys(tree: dict[str, Any], prefix: str, where: str) -> None:
    for name in list(tree):
        key = f"{prefix}{name}"
        if key in CfgNode.REMOVED_KEYS:
            _check_removed(key, tree.pop(name), where)
        elif isinstance(tree[name], dict):
            _drop_removed_keys(tree[name], f"{key}.", where)


def _strip(err: BaseException) -> str:
    return str(err.args[0]) if err.args else repr(err)


# key -> (test, what the value must be), checked by ``check_training_cfg``.
_TRAINING_CHECKS: dict[str, tuple[Any, str]] = {
    "SOLVER.MAX_ITER": (lambda v: isinstance(v, int) and v > 0, "a positive integer"),
    "SOLVER.CHECKPOINT_PERIOD": (lambda v: isinstance(v, int) and v > 0, "a positive integer"),
    "SOLVER.IMS_PER_BATCH": (lambda v: isinstance(v, int) and v > 0, "a positive integer"),
    "SOLVER.BASE_LR": (
        lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v >= 0,
        "a finite number >= 0",
    ),
    "TEST.EVAL_PERIOD": (
        lambda v: isinstance(v, int) and v >= 0,
        "an integer >= 0 (0 = evaluate only at the end)",
    ),
    "DATALOADER.NUM_WORKERS": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "DIST_TIMEOUT": (
        lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v > 0,
        "a positive number of seconds",
    ),
}


def check_training_cfg(cfg: CfgNode) -> None:
    """Refuse values that would make training fail late or silently misbehave.

    Raises:
        ConfigError: naming the first key whose value is out of range (e.g. ``SOLVER.MAX_ITER``
            0, a negative ``SOLVER.CHECKPOINT_PERIOD``).
    """
    for key, (valid, what) in _TRAINING_CHECKS.items():
        node: Any = cfg
        for part in key.split("."):
            node = node[part]
        if isinstance(node, bool) or not valid(node):
            raise ConfigError(f"config key {key} must be {what}, got {node!r}")


def get_base_cfg() -> CfgNode:
    """The detectron2 default keys this project uses, with detectron2's default values."""
    _C = CfgNode()
    _C.VERSION = 2  # config format version (detectron2 files say 2)

    _C.MODEL = CfgNode()
    _C.MODEL.DEVICE = "cuda"  # "cuda", "cuda:N" or "cpu"; falls back to "cpu" with a warning
    _C.MODEL.META_ARCHITECTURE = "MaskFormer"  # name in META_ARCH_REGISTRY
    # Initial weights: local path, https:// URL or detectron2:// model-zoo name; "" = random init.
    _C.MODEL.WEIGHTS = ""
    # Least share (0-1) of the model's weight values MODEL.WEIGHTS must fill; 0 = accept any.
    _C.MODEL.WEIGHTS_MIN_SHARE = 0.2
    _C.MODEL.PIXEL_MEAN = [103.530, 116.280, 123.675]  # per channel of INPUT.FORMAT, 0-255 scale
    _C.MODEL.PIXEL_STD = [1.0, 1.0, 1.0]  # per channel of INPUT.FORMAT, 0-255 scale

    _C.MODEL.BACKBONE = CfgNode()
    _C.MODEL.BACKBONE.NAME = "build_resnet_backbone"  # name in BACKBONE_REGISTRY
    # ResNet stages frozen at build: 0 none, 1 stem, 2 stem+res2, ... (FrozenBN stays frozen).
    _C.MODEL.BACKBONE.FREEZE_AT = 2

    _C.MODEL.RESNETS = CfgNode()
    _C.MODEL.RESNETS.DEPTH = 50  # 50 or 101
    _C.MODEL.RESNETS.OUT_FEATURES = ["res4"]  # stages returned by the backbone
    _C.MODEL.RESNETS.NUM_GROUPS = 1  # 1 = ResNet, >1 = ResNeXt
    _C.MODEL.RESNETS.NORM = "FrozenBN"  # "FrozenBN", "BN", "SyncBN", "GN" or ""
    _C.MODEL.RESNETS.WIDTH_PER_GROUP = 64  # bottleneck width per group in res2
    _C.MODEL.RESNETS.STRIDE_IN_1X1 = True  # stride in the 1x1 conv (MSRA) instead of the 3x3
    _C.MODEL.RESNETS.RES5_DILATION = 1  # dilation of res5 (1 or 2)
    _C.MODEL.RESNETS.RES2_OUT_CHANNELS = 256  # output channels of res2
    _C.MODEL.RESNETS.STEM_OUT_CHANNELS = 64  # output channels of the stem
    _C.MODEL.RESNETS.STEM_TYPE = "basic"  # stem kind; only "basic" (7x7 conv) is provided
    _C.MODEL.RESNETS.RES5_MULTI_GRID = [1, 1, 1]  # res5 per-block dilation multipliers

    _C.MODEL.SEM_SEG_HEAD = CfgNode()
    _C.MODEL.SEM_SEG_HEAD.NAME = "MaskFormerHead"  # name in SEM_SEG_HEADS_REGISTRY
    _C.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res2", "res3", "res4", "res5"]  # backbone outputs used
    _C.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = 255  # label of ignored pixels in semantic targets
    _C.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 133  # classes without "no object" (COCO panoptic: 133)
    _C.MODEL.SEM_SEG_HEAD.CONVS_DIM = 256  # pixel-decoder channel width
    _C.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = 4  # stride of the mask features (pixels)
    _C.MODEL.SEM_SEG_HEAD.NORM = "GN"  # norm of the pixel-decoder convs
    _C.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT = 1.0  # weight of the head's losses

    _C.INPUT = CfgNode()
    _C.INPUT.FORMAT = "BGR"  # channel order of the image tensor fed to the model: "RGB" or "BGR"
    _C.INPUT.RANDOM_FLIP = "horizontal"  # training flip: "horizontal", "vertical" or "none"
    _C.INPUT.MIN_SIZE_TEST = 800  # test-time shortest edge (pixels) when the mapper resizes
    _C.INPUT.MAX_SIZE_TEST = 1333  # test-time longest-edge cap (pixels) when the mapper resizes

    _C.DATASETS = CfgNode()
    _C.DATASETS.TRAIN = ()  # registered dataset names used for training
    _C.DATASETS.TEST = ()  # registered dataset names used for evaluation

    _C.DATALOADER = CfgNode()
    _C.DATALOADER.NUM_WORKERS = 4  # data-loading worker processes per process (at most the cores)
    _C.DATALOADER.ASPECT_RATIO_GROUPING = True  # batch landscape and portrait images apart
    # Training skips images without a non-crowd instance (panoptic: segment); a set with none
    # at all is refused.
    _C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True
    # Serve dataset dicts from a record file parsed once per node and memory-mapped by every
    # process (docs/training.md); False parses the annotation JSON in every process.
    _C.DATALOADER.RECORD_CACHE = True

    _C.SOLVER = CfgNode()
    _C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"  # or "WarmupCosineLR", "WarmupPolyLR"
    _C.SOLVER.MAX_ITER = 40000  # training iterations
    _C.SOLVER.BASE_LR = 0.001  # learning rate at the end of warmup
    _C.SOLVER.MOMENTUM = 0.9  # SGD momentum
    _C.SOLVER.NESTEROV = False  # SGD Nesterov momentum
    _C.SOLVER.WEIGHT_DECAY = 0.0001  # L2 weight decay
    _C.SOLVER.WEIGHT_DECAY_NORM = 0.0  # weight decay of normalisation-layer parameters
    _C.SOLVER.GAMMA = 0.1  # multi-step LR decay factor
    _C.SOLVER.STEPS = (30000,)  # iterations at which the LR is multiplied by GAMMA
    _C.SOLVER.WARMUP_FACTOR = 1.0 / 1000  # LR factor at iteration 0 of the warmup
    _C.SOLVER.WARMUP_ITERS = 1000  # warmup length (iterations)
    _C.SOLVER.WARMUP_METHOD = "linear"  # "linear" or "constant"
    _C.SOLVER.CHECKPOINT_PERIOD = 5000  # iterations between checkpoints
    _C.SOLVER.IMS_PER_BATCH = 16  # images per iteration over all processes
    _C.SOLVER.CLIP_GRADIENTS = CfgNode()
    _C.SOLVER.CLIP_GRADIENTS.ENABLED = False  # clip gradients before each step
    _C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"  # "value", "norm" (per parameter) or "full_model"
    _C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0  # clip threshold (value, or max norm)
    _C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0  # p of the p-norm for "norm" ("full_model": always 2)
    _C.SOLVER.AMP = CfgNode()
    _C.SOLVER.AMP.ENABLED = False  # mixed precision training (CUDA only; ignored on CPU)
    _C.SOLVER.AMP.PRECISION = "float16"  # "float16" (with a grad scaler) or "bfloat16"

    _C.TEST = CfgNode()
    _C.TEST.EVAL_PERIOD = 0  # iterations between evaluations during training; 0 = only at the end
    _C.TEST.DETECTIONS_PER_IMAGE = 100  # instance-segmentation predictions kept per image

    # Seconds a collective operation (gradient all-reduce, gather, barrier) waits for every
    # process before the run stops, naming the process that did not answer.
    _C.DIST_TIMEOUT = 1800
    _C.OUTPUT_DIR = "./output"  # where checkpoints, logs, metrics and results are written
    _C.SEED = -1  # global random seed; < 0 draws one and logs it
    _C.CUDNN_BENCHMARK = False  # let cuDNN pick convolution algorithms per input size
    return _C


# Mask2Former keys that its pixel decoder never reads: the deformable encoder takes its heads from
# MODEL.MASK_FORMER.NHEADS and always samples 4 points. Files that keep the default still load.
CfgNode.REMOVED_KEYS.update(
    {
        "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS": (
            8,
            "the pixel decoder's deformable attention heads are MODEL.MASK_FORMER.NHEADS, as in "
            "Mask2Former, which never read this key.",
        ),
        "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS": (
            4,
            "the pixel decoder's deformable attention samples 4 points per head and level, as in "
            "Mask2Former, which never read this key.",
        ),
    }
)


class AdapterSettings(NamedTuple):
    """Decoder adapters (:mod:`mask2former.modeling.adapters`) of both decoders of the head."""

    dim: int  # bottleneck width; 0 = no adapters (plain Mask2Former)
    scale: float  # factor on the adapter output


NO_ADAPTERS = AdapterSettings(dim=0, scale=0.1)
# Readers registered by packages that extend Mask2Former: cfg -> settings, or None when the
# config does not hold the reader's keys. Mask2Former itself has no adapter keys.
_ADAPTER_READERS: list[Callable[[CfgNode], AdapterSettings | None]] = []


def register_adapter_settings(
    reader: Callable[[CfgNode], AdapterSettings | None],
) -> Callable[[CfgNode], AdapterSettings | None]:
    """Let a package's own config keys switch the decoder adapters on (usable as a decorator).

    ``reader(cfg)`` returns the :class:`AdapterSettings` of a config that holds the package's
    keys, else None. The package registers it where it defines those keys, so any config that
    has them comes with its reader; Mask2Former's modules never read another package's keys.
    """
    if reader not in _ADAPTER_READERS:
        _ADAPTER_READERS.append(reader)
    return reader


def adapter_settings(cfg: CfgNode) -> AdapterSettings:
    """The adapters the decoders of ``cfg`` get: from the first registered reader that answers
    (:func:`register_adapter_settings`), else none (plain Mask2Former)."""
    for reader in _ADAPTER_READERS:
        settings = reader(cfg)
        if settings is not None:
            return settings
    return NO_ADAPTERS


def add_maskformer2_config(cfg: CfgNode) -> None:
    """Add Mask2Former's keys (and the DeepLab poly-LR keys it uses) to ``cfg`` in place."""
    cfg.INPUT.IMAGE_SIZE = 1024  # large-scale-jitter crop size (pixels) when the mapper jitters
    cfg.INPUT.MIN_SCALE = 0.1  # large-scale-jitter minimum scale of IMAGE_SIZE
    cfg.INPUT.MAX_SCALE = 2.0  # large-scale-jitter maximum scale of IMAGE_SIZE

    cfg.SOLVER.OPTIMIZER = "ADAMW"  # "ADAMW" or "SGD"
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1  # LR factor for parameters under "backbone"
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0  # weight decay of nn.Embedding parameters (queries)
    cfg.SOLVER.POLY_LR_POWER = 0.9  # exponent of WarmupPolyLR
    cfg.SOLVER.POLY_LR_CONSTANT_ENDING = 0.0  # WarmupPolyLR floor, as a fraction of BASE_LR

    mf = cfg.MODEL.MASK_FORMER = CfgNode()
    mf.DEEP_SUPERVISION = True  # losses on every decoder layer's prediction
    mf.NO_OBJECT_WEIGHT = 0.1  # class-loss weight of the "no object" class
    mf.CLASS_WEIGHT = 1.0  # weight of the classification loss and matching cost
    mf.DICE_WEIGHT = 1.0  # weight of the dice loss and matching cost
    mf.MASK_WEIGHT = 20.0  # weight of the mask BCE loss and matching cost
    mf.NHEADS = 8  # attention heads of the transformer decoder
    mf.DROPOUT = 0.1  # dropout in the transformer decoder
    mf.DIM_FEEDFORWARD = 2048  # FFN width of the transformer decoder
    mf.ENC_LAYERS = 0  # encoder layers in the decoder module; must be 0 (pixel decoder encodes)
    mf.DEC_LAYERS = 6  # predictions made: the learnable queries' + one per decoder layer
    mf.PRE_NORM = False  # pre-norm decoder layers
    mf.HIDDEN_DIM = 256  # query width
    mf.NUM_OBJECT_QUERIES = 100  # object queries Q
    mf.TRANSFORMER_IN_FEATURE = "multi_scale_pixel_decoder"  # decoder input features
    mf.ENFORCE_INPUT_PROJ = False  # always add 1x1 input projections to the decoder
    mf.SIZE_DIVISIBILITY = 32  # images are padded to a multiple of this (pixels)
    mf.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"  # registry name
    mf.TRAIN_NUM_POINTS = 112 * 112  # points sampled per mask for matching and mask losses
    mf.OVERSAMPLE_RATIO = 3.0  # importance sampling: candidate points per sampled point
    mf.IMPORTANCE_SAMPLE_RATIO = 0.75  # importance sampling: fraction of uncertain points
    mf.TEST = CfgNode()
    mf.TEST.SEMANTIC_ON = True  # return "sem_seg" in evaluation mode
    mf.TEST.INSTANCE_ON = False  # return "instances" in evaluation mode
    mf.TEST.PANOPTIC_ON = False  # return "panoptic_seg" in evaluation mode
    mf.TEST.OBJECT_MASK_THRESHOLD = 0.0  # min class score of a query kept by post-processing
    mf.TEST.OVERLAP_THRESHOLD = 0.0  # min visible/total mask area of a kept panoptic segment
    mf.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False  # resize masks before inference

    head = cfg.MODEL.SEM_SEG_HEAD
    head.MASK_DIM = 256  # width of mask embeddings and mask features
    head.TRANSFORMER_ENC_LAYERS = 0  # deformable encoder layers in the pixel decoder
    head.PIXEL_DECODER_NAME = "MSDeformAttnPixelDecoder"  # name in PIXEL_DECODER_REGISTRY
    head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]  # encoder inputs

    swin = cfg.MODEL.SWIN = CfgNode()
    swin.PRETRAIN_IMG_SIZE = 224  # image size of the pretraining checkpoint (pixels)
    swin.PATCH_SIZE = 4  # patch-embedding stride (pixels)
    swin.EMBED_DIM = 96  # channels of the first stage
    swin.DEPTHS = [2, 2, 6, 2]  # blocks per stage
    swin.NUM_HEADS = [3, 6, 12, 24]  # attention heads per stage
    swin.WINDOW_SIZE = 7  # attention window (tokens)
    swin.MLP_RATIO = 4.0  # MLP width / channels
    swin.QKV_BIAS = True  # bias in the qkv projection
    swin.QK_SCALE = None  # attention scale; None = head_dim ** -0.5
    swin.DROP_RATE = 0.0  # dropout after the patch embedding and in MLPs
    swin.ATTN_DROP_RATE = 0.0  # attention-probability dropout
    swin.DROP_PATH_RATE = 0.3  # stochastic-depth rate of the last block (linear schedule)
    swin.APE = False  # absolute position embedding
    swin.PATCH_NORM = True  # LayerNorm after the patch embedding
    swin.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # stages returned
    swin.USE_CHECKPOINT = False  # activation checkpointing in the blocks (saves memory)
