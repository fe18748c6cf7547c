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
from typing import Any

import yaml
from fvcore.common.config import BASE_KEY
from fvcore.common.config import CfgNode as _FvcoreCfgNode

__all__ = [
    "CfgNode",
    "ConfigError",
    "check_training_cfg",
    "get_base_cfg",
    "add_maskformer2_config",
]


class ConfigError(KeyError):
    """A config file or override names an unknown key, a missing file, or a bad value."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


class CfgNode(_FvcoreCfgNode):
    """fvcore ``CfgNode`` whose merge errors name the offending key and file.

    Two kinds of legacy keys are declared on the root config by the function that adds its
    keys, so that each config carries its own (nothing is registered at import):

    * :meth:`retire_key`: a key this project dropped. A file or override that sets it to its
      one accepted value (the only behaviour the key ever had in practice) loads, with the key
      ignored; any other value is an error giving the reason and the key that does the job.
    * :meth:`move_key`: a key that now lives under another name; a file or override that sets
      the old name sets the new one (in each file of a ``_BASE_`` chain before the chain is
      merged, so a file's value wins over its bases' under either name).
    """

    def retire_key(self, key: str, accepted: Any, reason: str) -> None:
        """Declare the full key ``key`` retired (see the class docstring).

        Args:
            accepted: the one value still accepted, or a module-level function ``cfg -> value``
                of the merged config when that value follows another key (a picklable function:
                configs travel to worker processes).
            reason: why the key is gone, naming what does its job now.
        """
        self.__dict__.setdefault("__retired_keys__", {})[key] = (accepted, reason)

    def move_key(self, old: str, new: str) -> None:
        """Declare that the full key ``old`` now lives at ``new`` (see the class docstring)."""
        self.__dict__.setdefault("__moved_keys__", {})[old] = new

    @property
    def _retired(self) -> dict[str, tuple[Any, str]]:
        return self.__dict__.get("__retired_keys__", {})

    @property
    def _moved(self) -> dict[str, str]:
        return self.__dict__.get("__moved_keys__", {})

    @classmethod
    def load_yaml_with_base(cls, filename: str, allow_unsafe: bool = False) -> dict[str, Any]:
        """Load a yaml file and, recursively, the files named by its ``_BASE_`` key.

        ``allow_unsafe`` is accepted for fvcore compatibility and ignored: configs are plain data.

        Raises:
            ConfigError: a missing, unreadable, empty or non-mapping file, a key given twice in
                one mapping, a ``_BASE_`` that is not a path (or list of paths) or that names a
                file already being loaded (a cycle); the message names the file and the key.
        """
        return _load_with_base(filename, (), {})

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        """Merge a yaml file (following ``_BASE_``) into this config."""
        where = f"config file {cfg_filename}"
        loaded = _load_with_base(cfg_filename, (), self._moved)  # moved keys: new names
        retired = self._take_retired(loaded, "")
        try:
            self.merge_from_other_cfg(type(self)(loaded))
        except (KeyError, ValueError, AssertionError) as err:
            raise ConfigError(f"{_strip(err)} (in {where})") from err
        self._check_retired(retired, where)

    def merge_from_list(self, cfg_list: list[str]) -> None:
        """Merge ``["KEY", "VALUE", ...]`` overrides (the trailing command-line arguments)."""
        where = "command-line overrides"
        if len(cfg_list) % 2 != 0:
            raise ConfigError(
                f"overrides must be KEY VALUE pairs; got an odd number of items: {cfg_list}"
            )
        kept: list[str] = []
        retired: list[tuple[str, Any]] = []
        keys = cfg_list[0::2]
        for key, value in zip(keys, cfg_list[1::2], strict=True):
            if key in self._moved:
                key = _moved_to(key, self._moved, self._moved[key] in keys, where)
            if key in self._retired:
                retired.append((key, _decode(value)))
                continue
            kept += [key, value]
        for index in range(0, len(kept), 2):
            key = kept[index]
            node: Any = self
            for part in key.split("."):
                if not isinstance(node, _FvcoreCfgNode) or part not in node:
                    raise ConfigError(f"unknown config key in {where}: {key}")
                node = node[part]
            value = _decode(kept[index + 1])
            if type(node) is float and type(value) is int:  # "0" for a float key means 0.0
                kept[index + 1] = repr(float(value))
        try:
            super().merge_from_list(kept)
        except (KeyError, ValueError, AssertionError) as err:
            raise ConfigError(f"{_strip(err)} (in {where})") from err
        self._check_retired(retired, where)

    def _take_retired(self, tree: dict[str, Any], prefix: str) -> list[tuple[str, Any]]:
        """Remove the retired keys from a loaded yaml tree; returns them with their values."""
        taken = []
        for name in list(tree):
            key = f"{prefix}{name}"
            if key in self._retired:
                taken.append((key, tree.pop(name)))
            elif isinstance(tree[name], dict):
                taken += self._take_retired(tree[name], f"{key}.")
        return taken

    def _check_retired(self, retired: list[tuple[str, Any]], where: str) -> None:
        """Refuse a retired key set to another value than the one it accepts (in the merged
        config, for a value that follows another key)."""
        for key, value in retired:
            accepted, reason = self._retired[key]
            if callable(accepted):
                accepted = accepted(self)
            if value != accepted:
                raise ConfigError(
                    f"config key {key} is not supported (in {where}): {reason} Only "
                    f"{accepted!r} is accepted here, and it is ignored; got {value!r}."
                )


def _moved_to(old: str, moved: dict[str, str], both: bool, where: str) -> str:
    """The new name of the moved key ``old``; refused when ``where`` sets both names."""
    new = moved[old]
    if both:
        raise ConfigError(
            f"config keys {old} and {new} are both set (in {where}): {old} is the old name "
            f"of {new}; set only {new}"
        )
    return new


def _move_keys(tree: dict[str, Any], moved: dict[str, str], where: str) -> None:
    """Put the values of moved keys (old name -> new name) of a yaml tree under their new names."""
    for old, new in moved.items():
        *parents, name = old.split(".")
        node: Any = tree
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or name not in node:
            continue
        _moved_to(old, moved, _tree_has(tree, new), where)
        value = node.pop(name)
        *parents, name = new.split(".")
        target = tree
        for part in parents:
            target = target.setdefault(part, {})
        target[name] = value


def _tree_has(tree: dict[str, Any], key: str) -> bool:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


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


def _load_with_base(filename: str, chain: tuple[str, ...], moved: dict[str, str]) -> dict[str, Any]:
    """One yaml file merged over its ``_BASE_`` files; in each file, the keys of ``moved`` (old
    name -> new name) take their new names before the merge, so a file's value wins over its
    bases' under either name."""
    real = os.path.realpath(filename)
    if real in chain:
        cycle = " -> ".join([*chain[chain.index(real) :], real])
        raise ConfigError(f"circular _BASE_ in config files: {cycle}")
    data = _read_yaml(filename)
    _move_keys(data, moved, f"config file {filename}")
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
            _merge_into(_load_with_base(path, (*chain, real), moved), merged, filename)
        except ConfigError as err:
            if "circular _BASE_" in str(err):
                raise
            raise ConfigError(f"{err} (named by _BASE_ in {filename})") from err
    _merge_into(data, merged, filename)
    return merged


def _decode(value: Any) -> Any:
    return _FvcoreCfgNode._decode_cfg_value(value) if isinstance(value, str) else value


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
    _C.SOLVER.AMP.ENABLED = False  # mixed precision training (torch.autocast on MODEL.DEVICE)
    # "float16" (with a grad scaler; CUDA only, float32 on the CPU) or "bfloat16" (CUDA and CPU)
    _C.SOLVER.AMP.PRECISION = "float16"

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
    # Bottleneck adapters (mask2former.modeling.adapters) after the FFN of every pixel-decoder
    # encoder layer and transformer-decoder layer; off in plain Mask2Former.
    mf.USE_ADAPTERS = False
    mf.ADAPTER_DIM = 64  # adapter bottleneck width
    mf.ADAPTER_SCALE = 0.1  # factor on the adapter output
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

    # Any timm model as the backbone (MODEL.BACKBONE.NAME "TimmBackbone"; docs/backbones.md).
    tm = cfg.MODEL.TIMM = CfgNode()
    tm.NAME = "convnext_tiny"  # a timm.list_models() name, optionally ".tag" choosing its weights
    tm.PRETRAINED = False  # load timm's pretrained weights (its Hugging Face hub download/cache)
    tm.PRETRAINED_FILE = ""  # weight file (path or https:// URL) used instead of the hub; "" = hub
    # feature_info indices: the levels at strides 4-32 (hierarchical) or the block the ViT pyramid
    # reads (plain ViT); [] = the last level at each stride / the last block.
    tm.OUT_INDICES = []
    tm.IMG_SIZE = 0  # side (pixels) a ViT's position embeddings are built for; 0 = the model's
    tm.DROP_PATH = 0.0  # stochastic-depth rate of the trunk (timm's drop_path_rate)
    # Leading timm parameter groups frozen: 0 none, k the stem and k-1 stages (or ViT blocks),
    # -1 the whole trunk (a ViT's feature pyramid still trains).
    tm.FREEZE_AT = 0

    # Keys of Mask2Former's config that its modules never read. Files that keep the value every
    # model had still load.
    cfg.retire_key(
        "MODEL.MASK_FORMER.ENC_LAYERS",
        0,
        "the pixel decoder's deformable encoder does the encoding (its layers are "
        "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS), as in Mask2Former, which never read this key.",
    )
    cfg.retire_key(
        "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS",
        8,
        "the pixel decoder's deformable attention heads are MODEL.MASK_FORMER.NHEADS, as in "
        "Mask2Former, which never read this key.",
    )
    cfg.retire_key(
        "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS",
        4,
        "the pixel decoder's deformable attention samples 4 points per head and level, as in "
        "Mask2Former, which never read this key.",
    )
