"""A known scene for the Predictor and the demo: the tiny od model's config and a stand-in model.

The stand-in paints two stuff bands and n things back to front, so occlusion and depth are known
(thing t is closer than every earlier thing).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn

from instaformer.config import setup_cfg
from instaformer.predictor import Predictor
from tests.support import REPO

OD_CONFIG = REPO / "configs" / "synthetic" / "instaformer_od_tiny.yaml"
"""Tiny InstaFormer^od: narrow R50 Mask2Former plus a small GeometricTransformer order head."""
LOW_THRESHOLDS = [
    "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.0",
    "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", "0.0",
]  # fmt: skip
"""Overrides under which a random-init model yields segments."""


def tiny_cfg():
    """Config of the tiny od model (random init, low thresholds, CPU)."""
    return setup_cfg(str(OD_CONFIG), LOW_THRESHOLDS + ["MODEL.DEVICE", "cpu"])


def make_scene(h: int, w: int, n: int = 4):
    """RGB image, panoptic map and segments_info of two stuff bands and n things painted back
    to front (thing t is closer than every earlier thing)."""
    image = np.zeros((h, w, 3), np.uint8)
    panoptic = np.zeros((h, w), np.int32)
    image[: h // 2], panoptic[: h // 2] = (135, 190, 235), 1
    image[h // 2 :], panoptic[h // 2 :] = (90, 160, 70), 2
    infos = [
        {"id": 1, "category_id": 3, "isthing": False, "score": 1.0},
        {"id": 2, "category_id": 4, "isthing": False, "score": 1.0},
    ]
    for t in range(n):
        cy, cx = int(h * (0.3 + 0.12 * t)), int(w * (0.25 + 0.15 * t))
        mask = np.zeros((h, w), np.uint8)
        cv2.rectangle(mask, (cx - w // 8, cy - h // 8), (cx + w // 8, cy + h // 8), 1, -1)
        image[mask.astype(bool)] = (40 + 50 * t, 200 - 40 * t, 120)
        panoptic[mask.astype(bool)] = 10 + t
        infos.append(
            {"id": 10 + t, "category_id": t % 3, "isthing": True, "score": 0.9, "query_index": t}
        )
    return image, panoptic, infos


class SceneModel(nn.Module):
    """Stand-in following the blind-inference output contract for a fixed scene."""

    output_tasks = ("occlusion", "depth")

    def __init__(self, panoptic: np.ndarray, infos: list[dict], shuffle_rows: bool = False):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.panoptic, self.infos, self.shuffle_rows = panoptic, infos, shuffle_rows

    def forward(self, batched_inputs, results=None):
        outputs = []
        for x in batched_inputs:
            assert x["image"].dtype == torch.uint8 and x["image"].shape[0] == 3
            size = (x["width"], x["height"])
            seg = cv2.resize(self.panoptic, size, interpolation=cv2.INTER_NEAREST)
            things = [i for i in self.infos if i["isthing"]]
            order = list(range(len(things)))[:: -1 if self.shuffle_rows else 1]
            depth_rank = [things[i]["query_index"] for i in order]  # painting order
            k = len(order)
            occ_p, depth_p = torch.zeros(k, k), torch.zeros(k, k, 3)
            for a in range(k):
                for b in range(k):
                    if a != b:
                        closer = depth_rank[a] > depth_rank[b]
                        occ_p[a, b] = (
                            0.9 if closer and abs(depth_rank[a] - depth_rank[b]) == 1 else 0.1
                        )
                        depth_p[a, b] = torch.tensor([0.1, 0.8, 0.1] if closer else [0.7, 0.2, 0.1])
            occ = (occ_p > 0.5).long().fill_diagonal_(-1)
            depth = depth_p.argmax(-1).fill_diagonal_(-1)
            outputs.append(
                {
                    "panoptic_seg": (torch.from_numpy(seg), self.infos),
                    "order_segment_ids": torch.tensor([things[i]["id"] for i in order]),
                    "occlusion": occ,
                    "occlusion_prob": occ_p,
                    "depth": depth,
                    "depth_prob": depth_p,
                }
            )
        return outputs


def scene_predictor(shuffle_rows: bool = False, size=(96, 128)):
    image, panoptic, infos = make_scene(*size)
    return Predictor(tiny_cfg(), model=SceneModel(panoptic, infos, shuffle_rows)), image
