"""InstaFormer configuration: :func:`get_cfg` returns every key the project reads.

Assembly order (as the reference): detectron2 defaults -> Mask2Former keys -> InstaFormer keys
(this module) -> yaml file (``merge_from_file``, following ``_BASE_``) -> ``KEY VALUE`` overrides
(``merge_from_list``).
"""

from __future__ import annotations

import os
from pathlib import Path

from mask2former.config import CfgNode, ConfigError, add_maskformer2_config, get_base_cfg

__all__ = [
    "CfgNode",
    "ConfigError",
    "get_cfg",
    "add_instaformer_config",
    "add_instaordernet_config",
    "setup_cfg",
    "REMOVABLE_LOSSES",
]

# Names accepted in MODEL.REMOVE_LOSSES: Mask2Former's class and mask losses, the order losses.
REMOVABLE_LOSSES = ("labels", "masks", "occlusion", "depth")


def add_instaformer_config(cfg: CfgNode) -> None:
    """Add the order-prediction keys to ``cfg`` in place (docs/reference.md [IF 5.1])."""
    # InstaOrder's defaults differ from Mask2Former's here (every released config sets them)
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = False  # no "sem_seg" unless asked for
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = True  # "panoptic_seg": the segments orders refer to
    cfg.INPUT.DATASET_MAPPER_NAME = "instaorder_panoptic"  # name in instaformer.data's mappers
    # Mapper augmentation: training large-scale jitter (INPUT.IMAGE_SIZE, MIN_SCALE, MAX_SCALE)
    # + flip; test resize (INPUT.MIN_SIZE_TEST, MAX_SIZE_TEST).
    cfg.INPUT.AUGMENT = False
    cfg.INPUT.RM_BIDIREC = 0  # 1: bidirectional occlusion pairs are ignored (-1)
    cfg.INPUT.RM_OVERLAP = 0  # 1: depth pairs with overlapping extents are ignored (-1)
    # Balanced-Softmax class priors: number of training pairs per class (InstaOrder Panoptic train).
    cfg.INPUT.OCC_SAMPLES_PER_CLASS = [2353545, 388323]  # occlusion classes 0 (no), 1 (occludes)
    cfg.INPUT.DEPTH_SAMPLES_PER_CLASS = [1345145, 1345145, 49398]  # depth farther, closer, equal

    # The decoder adapters (MODEL.MASK_FORMER.ADAPTER_DIM, ADAPTER_SCALE) InstaFormer trains.
    cfg.MODEL.MASK_FORMER.USE_ADAPTERS = True
    cfg.MODEL.BACKBONE.FREEZE = False  # no gradient for any backbone parameter
    cfg.MODEL.SEM_SEG_HEAD.FREEZE = False  # no gradient for the decoders (adapters still train)
    cfg.MODEL.REMOVE_LOSSES = []  # losses not trained: any of labels, masks, occlusion, depth

    gp = cfg.MODEL.GEOMETRIC_PREDICTOR = CfgNode()
    gp.NAME = ""  # order head in ORDER_HEAD_REGISTRY; "" = plain Mask2Former, no orders
    gp.TASK = ""  # "o" occlusion, "d" depth, "od" both; "" with NAME ""
    gp.INPUT_SIZE = 256  # side (pixels) of the square image/mask input of the pairwise head
    # Pairwise head: initialise InstaOrderNet from INSTAORDERNET_WEIGHTS_PATH when building.
    gp.USE_INSTAORDERNET_WEIGHTS = False
    # Folder with InstaOrder_InstaOrderNet_{o,d,od}.pth.tar, or one such file; "" = none (the
    # InstaOrderNet weights then come from MODEL.WEIGHTS, as in released pairwise checkpoints).
    gp.INSTAORDERNET_WEIGHTS_PATH = ""
    gp.OCCLUSION_ON = False  # return the occlusion matrix at test time
    gp.DEPTH_ON = False  # return the depth matrix at test time
    gp.OCCLUSION_WEIGHT = 5.0  # weight of the occlusion loss (every head layer)
    gp.DEPTH_WEIGHT = 5.0  # weight of the depth loss (every head layer)
    gp.DEPTH_LOSS = "balanced_softmax"  # "balanced_softmax" or "ce"
    gp.NUM_LAYERS = 8  # interaction-transformer layers (one order prediction per layer)
    gp.D_MODEL = 512  # interaction-transformer width
    gp.NUM_HEADS = 8  # attention heads of the order head's transformers
    gp.MLP_NUM_LAYERS = 2  # linear layers per MLP of the order head
    gp.MLP_EXPANSION = 4  # hidden width / D_MODEL of the order head's MLPs
    gp.TRANSPOSE_QUERIES = False  # pair score f.e^T instead of e.f^T
    gp.ATTN_BEFORE_POOL = True  # instance-axis attention over the masked features before pooling
    gp.ADD_INPUT_REPRESENTATIONS = True  # add the projected inputs to the task-MLP outputs
    gp.CHAIN_TASK_MLPS = True  # od: depth MLPs read the occlusion MLPs' outputs (as released)

    # Own InstaOrder Panoptic datasets, registered when train_net sets up the config: dataset
    # name -> IMAGE_ROOT, PANOPTIC_ROOT, JSON (relative to $DETECTRON2_DATASETS). See
    # docs/custom_data.md; empty = none.
    cfg.DATASETS.CUSTOM = CfgNode(new_allowed=True)

    # Order metrics of the evaluation entry point (evaluators only; the model's order rows follow
    # each call's inputs: ground-truth instances when they carry tgt_pan_idx, docs/configs.md).
    cfg.TEST.OCCLUSION_EVALUATION = False  # evaluate occlusion order (OcclusionEvaluator)
    cfg.TEST.DEPTH_EVALUATION = False  # evaluate depth order (DepthEvaluator)
    cfg.TEST.MULTI_SCALE_EVALUATION = False  # also report order metrics per instance count
    cfg.TEST.OCCLUSION_ZERO_DIV = 1  # per-image occlusion P/R/F1 when undefined (0/0): 0 or 1

    cfg.WANDB = CfgNode()
    cfg.WANDB.METRICS = False  # log training scalars to Weights & Biases (needs `wandb`)
    cfg.WANDB.PROJECT = "instaformer"  # Weights & Biases project name
    _declare_legacy_keys(cfg)


def _pairwise_head(cfg: CfgNode) -> bool:
    """Whether ``cfg`` names the pairwise order head (the value ``PAIRWISE`` repeated)."""
    return cfg.MODEL.GEOMETRIC_PREDICTOR.NAME == "PairwiseResNet"


def _declare_legacy_keys(cfg: CfgNode) -> None:
    """Keys of the reference that never changed its behaviour, or that moved (docs/configs.md).

    A file or override that sets a retired key to the released value still loads; any other
    value is refused (:meth:`~mask2former.config.CfgNode.retire_key`).
    """
    gp = "MODEL.GEOMETRIC_PREDICTOR."
    retired = {
        # docs/reference.md [IF 7.14-15, 7.20]
        "FILTER_TRIGGERED_QUERIES": (
            True,
            "queries are always filtered to the matched (or kept) ones.",
        ),
        "OPERATE_ON_MASK_EMBED": (
            True,
            "the reference never read it; the order head always reads the mask embeddings.",
        ),
        "POS_ENC": (
            False,
            "the reference replaced the features by a positional encoding, which breaks the head.",
        ),
        "LEARNABLE_PE": (
            False,
            "the reference's learned embedding only ran with D_MODEL 256 and no release used it.",
        ),
        "QUERIES_INPUTS": (
            False,
            "it only configured the symmetric SingleTransformer/CrossAttentionTransformer heads, "
            "which cannot express direction and are not provided.",
        ),
        "USE_GT_MASKS": (
            False,
            "the debug path read a hard-coded COCO file; evaluate InstaOrderNet on GT masks with "
            "the configs under configs/instaordernet/ instead.",
        ),
        # options of the holistic head with one released value
        "METHOD": (
            "stack",
            "the holistic head stacks the 2n tokens [embeddings; pooled features]; the "
            "reference's 'cat' and 'sep' layouts were never released nor validated.",
        ),
        "FUSE": (
            False,
            "the pair score is e @ f.T (MODEL.GEOMETRIC_PREDICTOR.TRANSPOSE_QUERIES: f @ e.T); "
            "the Gram-matrix scores of FUSE are symmetric and cannot express direction.",
        ),
        "MASK_NON_MASK_VALUES": (
            True,
            "the holistic head always zeroes the attended features outside each instance mask "
            "(MODEL.GEOMETRIC_PREDICTOR.ATTN_BEFORE_POOL switches that attention).",
        ),
        "PAIRWISE": (
            _pairwise_head,
            "MODEL.GEOMETRIC_PREDICTOR.NAME chooses the head; PAIRWISE repeated it (True "
            "exactly for NAME 'PairwiseResNet').",
        ),
    }
    for name, (accepted, reason) in retired.items():
        cfg.retire_key(gp + name, accepted, reason)
    cfg.retire_key(
        "TEST.SAMPLE_VERBOSE", False, "per-image metrics are written by the evaluators instead."
    )
    cfg.retire_key("WANDB.VISUALIZATION", False, "only scalar metrics are logged (WANDB.METRICS).")
    # Mask2Former's adapters are Mask2Former keys; occlusion zero division is an evaluation option.
    for name in ("USE_ADAPTERS", "ADAPTER_DIM", "ADAPTER_SCALE"):
        cfg.move_key(gp + name, "MODEL.MASK_FORMER." + name)
    cfg.move_key("SOLVER.OCCLUSION_ZERO_DIV", "TEST.OCCLUSION_ZERO_DIV")


def add_instaordernet_config(cfg: CfgNode) -> None:
    """Add the standalone InstaOrderNet keys (docs/reference.md [ION]; docs/instaordernet.md)."""
    net = cfg.MODEL.INSTAORDERNET = CfgNode()
    net.TASK = "od"  # "o" occlusion, "d" depth, "od" both heads on one trunk
    # Pair-classifier trunk: "InstaOrderResNet" (the released 5-channel ResNet-50) or "timm" (the
    # model of MODEL.TIMM, its first convolution widened to the two mask channels).
    net.BACKBONE = "InstaOrderResNet"
    net.INPUT_MODE = "resize"  # "patch": square crop around the pair (o); "resize": whole image
    net.INPUT_SIZE = 384  # side (pixels) of the square network input (o: 256; d, od: 384)
    net.POSITIVE_RATIO = 0.7  # o training: probability of drawing an occluding cell ([ION 6])
    net.OCCLUSION_WEIGHT = 1.0  # weight of the occlusion BCE (o, od)
    net.DEPTH_OVERLAP_WEIGHT = 0.1  # weight of the depth CE over pairs with overlapping extents
    net.DEPTH_DISTINCT_WEIGHT = 0.9  # weight of the depth CE over distinct pairs
    net.DEPTH_DOUBLE_SOFTMAX = False  # True: reference CE on softmax outputs (defect, [ION 15.2])
    # Patch-mode test crop: k > 0 first enlarges each box to a square of side sqrt(k*w*h) (the
    # reference's 3, [ION 15.1], needed for its numbers); 0 crops as in training.
    net.TEST_BOX_ENLARGE = 0.0
    # Resize-mode training RGB interpolation: "bicubic" (as at test) or "bilinear" (reference).
    net.TRAIN_INTERPOLATION = "bicubic"
    net.PAIRS_PER_FORWARD = 64  # inference: network inputs per forward pass (a pair counts 2)


def get_cfg() -> CfgNode:
    """A fresh config holding every key with its default value."""
    cfg = get_base_cfg()
    add_maskformer2_config(cfg)
    add_instaformer_config(cfg)
    add_instaordernet_config(cfg)
    return cfg


def config_roots() -> list[Path]:
    """Folders that hold the released configs: the installed package's copy, then a checkout's."""
    package = Path(__file__).resolve().parent
    return [package / "configs", package.parent / "configs"]


def resolve_config_file(name: str) -> str:
    """The path of a config file given as a path or by its name relative to ``configs/``.

    ``name`` may be an existing file, or a released config's relative name such as
    ``"instaorder/occlusion_depth/all/swin/maskformer2_swin_tiny_bs16_50ep.yaml"`` (a leading
    ``configs/`` is accepted), looked up in :func:`config_roots`.

    Raises:
        ConfigError: neither a file nor a known config name.
    """
    if os.path.isfile(name):
        return name
    relative = name.removeprefix("configs/")
    for root in config_roots():
        candidate = root / relative
        if candidate.is_file():
            return str(candidate)
    raise ConfigError(
        f"config file {name!r} not found: neither a file nor a name under configs/ "
        f"(looked in {', '.join(str(r) for r in config_roots())})"
    )


def setup_cfg(config_file: str = "", opts: list[str] | None = None, freeze: bool = True) -> CfgNode:
    """``get_cfg()`` + ``merge_from_file(config_file)`` (if given) + ``merge_from_list(opts)``.

    ``config_file`` is a path or a released config's name (:func:`resolve_config_file`).
    """
    cfg = get_cfg()
    if config_file:
        cfg.merge_from_file(resolve_config_file(config_file))
    if opts:
        cfg.merge_from_list(list(opts))
    if freeze:
        cfg.freeze()
    return cfg
