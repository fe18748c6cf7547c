"""A tiny random-init InstaFormer config, a synthetic input and the order-output contract."""

from __future__ import annotations

import torch

from instaformer.config import get_cfg
from instaformer.vocabulary import TASK_DIRS
from mask2former.structures import Instances
from tests.support import REPO

TINY = [
    "MODEL.DEVICE", "cpu",
    "MODEL.BACKBONE.NAME", "D2SwinTransformer",
    "MODEL.SWIN.EMBED_DIM", "16",
    "MODEL.SWIN.DEPTHS", "[1, 1, 1, 1]",
    "MODEL.SWIN.NUM_HEADS", "[1, 1, 2, 2]",
    "MODEL.SWIN.WINDOW_SIZE", "4",
    "MODEL.MASK_FORMER.HIDDEN_DIM", "32",
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD", "64",
    "MODEL.MASK_FORMER.DEC_LAYERS", "3",
    "MODEL.MASK_FORMER.NHEADS", "2",
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "8",
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "64",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
    "MODEL.SEM_SEG_HEAD.MASK_DIM", "32",
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5",
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1",
    "MODEL.MASK_FORMER.ADAPTER_DIM", "8",
    "MODEL.GEOMETRIC_PREDICTOR.D_MODEL", "32",
    "MODEL.GEOMETRIC_PREDICTOR.NUM_HEADS", "2",
    "MODEL.GEOMETRIC_PREDICTOR.NUM_LAYERS", "2",
    "MODEL.GEOMETRIC_PREDICTOR.INPUT_SIZE", "32",
    "MODEL.GEOMETRIC_PREDICTOR.USE_INSTAORDERNET_WEIGHTS", "False",
    "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.0",
    "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", "0.0",
]  # fmt: skip
"""Overrides of a tiny random-init InstaFormer (Swin, width 32, 8 queries, 2 head layers)."""


def tiny_cfg(task: str = "od", head: str = "all", *opts: str):
    """Tiny config from the released ``<task>/<head>/<task>_config.yaml`` plus ``opts``."""
    name = TASK_DIRS[task]
    cfg = get_cfg()
    cfg.merge_from_file(str(REPO / "configs" / "instaorder" / name / head / f"{name}_config.yaml"))
    cfg.merge_from_list(TINY + list(opts))
    return cfg


def sample(n: int, h: int = 64, w: int = 64, seed: int = 0) -> dict:
    """An input with one stuff band (instance 0) and n disjoint annotated thing rectangles
    (instances 1..n), random order matrices (depth with a few unlabelled pairs)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
    labels = torch.zeros((h, w), dtype=torch.int64)  # 0 = stuff band
    cols = max(n, 1)
    for t in range(n):
        x0 = t * w // cols
        labels[h // 4 : h // 4 + h // 2, x0 : x0 + max(w // cols - 2, 2)] = t + 1
    masks = labels[None] == torch.arange(n + 1)[:, None, None]
    classes = torch.tensor([4] + [t % 4 for t in range(n)])
    occlusion = torch.randint(0, 2, (n, n), generator=g, dtype=torch.int32)
    occlusion.fill_diagonal_(0)
    closer = torch.randint(0, 3, (n, n), generator=g, dtype=torch.int32)
    depth = torch.where(closer.triu(1) == 2, 2, closer.triu(1).clamp(max=1))
    depth = depth + torch.where(depth.t() == 2, 2, 1 - depth.t()).tril(-1)
    if n >= 3:
        depth[0, 2] = depth[2, 0] = -1
    depth.fill_diagonal_(-1)
    return {
        "image": image,
        "height": h,
        "width": w,
        "instances": Instances((h, w), gt_classes=classes, gt_masks=masks),
        "tgt_pan_idx": torch.arange(1, n + 1),
        "occlusion_matrix": occlusion,
        "depth_matrix": depth,
        "overlap_matrix": torch.zeros((n, n), dtype=torch.int32),
        "count_matrix": torch.ones((n, n), dtype=torch.int32),
    }


def check_order_contract(out: dict, k: int) -> None:
    """The order outputs of one image over k instances: int64 labels with -1 on the diagonal,
    float32 probabilities with 0 there, labels = thresholded (occlusion) or argmax (depth)."""
    for task in ("occlusion", "depth"):
        labels, prob = out[task], out[f"{task}_prob"]
        assert labels.dtype == torch.int64 and labels.shape == (k, k)
        assert (labels.diagonal() == -1).all()
        off = ~torch.eye(k, dtype=torch.bool)
        assert prob.dtype == torch.float32 and prob.shape[:2] == (k, k)
        assert (prob.diagonal(0, 0, 1) == 0).all()
        if task == "occlusion":
            assert torch.equal(labels[off], (prob[off] > 0.5).long())
        else:
            assert prob.shape == (k, k, 3)
            torch.testing.assert_close(prob[off].sum(-1), torch.ones(int(off.sum())))
            assert torch.equal(labels[off], prob[off].argmax(-1))
