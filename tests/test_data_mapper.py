"""The instaorder_panoptic mapper on the synthetic twin: matrices equal the generator's ground
truth, augmentation keeps matrices and instances consistent, config wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from instaformer.config import get_cfg
from instaformer.data import (
    InstaOrderPanopticMapper,
    build_dataset_mapper,
    make_synthetic_dataset,
    register_synthetic_instaorder,
)
from instaformer.data.augment import build_lsj_augmentation
from instaformer.data.io import read_panoptic_ids
from mask2former.data.catalog import DatasetCatalog
from mask2former.data.coco_categories import coco_panoptic_metadata


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic"))
    truth = make_synthetic_dataset(root, num_train=16, num_val=4, image_size=96, seed=3)
    register_synthetic_instaorder(root)
    return root, truth


def _expected(segments):
    """Ground truth of the annotated (thing, non-crowd) segments in instances order."""
    non_crowd = [s for s in segments if not s["iscrowd"]]
    idx = [k for k, s in enumerate(non_crowd) if s["z"] is not None]
    things = [non_crowd[k] for k in idx]
    n = len(things)
    occ = np.zeros((n, n), dtype=np.int32)
    depth = np.full((n, n), -1, dtype=np.int32)
    overlap = np.full((n, n), -1, dtype=np.int32)
    for a, sa in enumerate(things):
        for b, sb in enumerate(things):
            if a == b:
                continue
            occ[a, b] = int(sb["id"] in sa["occludes"])
            depth[a, b] = 2 if sa["z"] == sb["z"] else int(sa["z"] < sb["z"])
            overlap[a, b] = int(
                sa["z"] < sb["z"] + sb["thickness"] and sb["z"] < sa["z"] + sa["thickness"]
            )
    return non_crowd, idx, occ, depth, overlap


def test_matrices_equal_generator_ground_truth(synthetic):
    _, truth = synthetic
    dicts = DatasetCatalog.get("synthetic_instaorder_train")
    mapper = InstaOrderPanopticMapper(is_train=True, task="od")
    to_contiguous = coco_panoptic_metadata()["stuff_dataset_id_to_contiguous_id"]
    crowd_first = 0
    for record, gt in zip(dicts, truth["train"], strict=True):
        out = mapper(record)
        non_crowd, idx, occ, depth, overlap = _expected(gt["segments"])
        kinds = ["crowd" if s["iscrowd"] else s["z"] is not None for s in gt["segments"]]
        crowd_first += "crowd" in kinds and True in kinds[kinds.index("crowd") :]
        assert out["tgt_pan_idx"].tolist() == idx
        assert out["tgt_pan_idx"].dtype == torch.int64
        np.testing.assert_array_equal(out["occlusion_matrix"].numpy(), occ)
        np.testing.assert_array_equal(out["depth_matrix"].numpy(), depth)
        np.testing.assert_array_equal(out["overlap_matrix"].numpy(), overlap)
        count = out["count_matrix"].numpy()
        assert (np.diag(count) == -1).all() and (count[~np.eye(len(idx), dtype=bool)] >= 2).all()
        assert all(m.dtype == torch.int32 for k, m in out.items() if k.endswith("_matrix"))
        inst = out["instances"]
        assert inst.gt_classes.tolist() == [to_contiguous[s["category_id"]] for s in non_crowd]
        ids = torch.from_numpy(read_panoptic_ids(record["pan_seg_file_name"]))
        for mask, seg in zip(inst.gt_masks, non_crowd, strict=True):
            assert torch.equal(mask, ids == seg["id"])
        assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, 96, 96)
        assert "instaorder" not in out and out["pan_seg_file_name"] == record["pan_seg_file_name"]
        assert "low_image" not in out
    assert crowd_first >= 1  # a crowd segment preceded an annotated one (offset fix)


def test_task_selects_matrices(synthetic):
    record = DatasetCatalog.get("synthetic_instaorder_val")[0]
    out_o = InstaOrderPanopticMapper(is_train=False, task="o")(dict(record))
    assert "occlusion_matrix" in out_o and "depth_matrix" not in out_o
    out_d = InstaOrderPanopticMapper(is_train=False, task="d")(dict(record))
    assert {"depth_matrix", "overlap_matrix", "count_matrix"} <= set(out_d)
    assert "occlusion_matrix" not in out_d
    bgr = InstaOrderPanopticMapper(is_train=False, image_format="BGR")(dict(record))
    assert torch.equal(bgr["image"], out_o["image"].flip(0))


def _crop(top, left, height, width):
    def apply(image, ids):
        return (
            v2.functional.crop(image, top, left, height, width),
            v2.functional.crop(ids, top, left, height, width),
        )

    return apply


def test_crop_away_an_instance_removes_its_rows_and_columns(synthetic):
    _, truth = synthetic
    dicts = DatasetCatalog.get("synthetic_instaorder_train")
    plain = InstaOrderPanopticMapper(is_train=True)
    checked = 0
    for record in dicts:
        full = plain(dict(record))
        masks = full["instances"].gt_masks
        for k, position in enumerate(full["tgt_pan_idx"].tolist()):
            cols = masks[position].any(0).nonzero().flatten()
            x0, x1 = int(cols.min()), int(cols.max()) + 1
            if x1 < 96 - 8:  # keep only what lies right of the instance
                window = (0, x1, 96, 96 - x1)
            elif x0 > 8:  # keep only what lies left of it
                window = (0, 0, 96, x0)
            else:
                continue
            out = InstaOrderPanopticMapper(is_train=True, augmentation=_crop(*window))(dict(record))
            ids = torch.from_numpy(read_panoptic_ids(record["pan_seg_file_name"]))
            cropped = v2.functional.crop(ids[None], *window)[0]
            present = set(torch.unique(cropped).tolist())
            seg_ids = [seg["id"] for seg in record["segments_info"] if not seg["iscrowd"]]
            kept = [j for j, p in enumerate(full["tgt_pan_idx"].tolist()) if seg_ids[p] in present]
            assert k not in kept
            for key in ("occlusion_matrix", "depth_matrix", "overlap_matrix", "count_matrix"):
                expected = full[key][kept][:, kept]
                assert torch.equal(out[key], expected), key
            assert len(out["tgt_pan_idx"]) == len(kept)
            positions = out["tgt_pan_idx"].tolist()
            assert positions == sorted(positions)
            assert all(out["instances"].gt_masks[p].any() for p in positions)
            assert out["image"].shape[-1] == window[3]
            checked += 1
            break
    assert checked >= 5


def test_lsj_keeps_matrices_consistent_with_visible_segments(synthetic):
    record = DatasetCatalog.get("synthetic_instaorder_train")[1]
    base = InstaOrderPanopticMapper(is_train=True)(dict(record))
    segments = [s for s in record["segments_info"] if not s["iscrowd"]]
    annotated_ids = [segments[p]["id"] for p in base["tgt_pan_idx"].tolist()]
    lsj = build_lsj_augmentation(
        image_size=64, min_scale=0.5, max_scale=3.0, random_flip="horizontal"
    )
    mapper = InstaOrderPanopticMapper(is_train=True, augmentation=lsj)
    ids_full = torch.from_numpy(read_panoptic_ids(record["pan_seg_file_name"]))[None]
    image_full = torch.zeros((3, 96, 96), dtype=torch.uint8)
    sizes = set()
    for seed in range(8):
        torch.manual_seed(seed)
        out = mapper(dict(record))
        torch.manual_seed(seed)
        _, ids = lsj(tv_tensors.Image(image_full), tv_tensors.Mask(ids_full))
        present = set(torch.unique(ids).tolist())
        visible = [s for s in segments if s["id"] in present]
        assert len(out["instances"]) == len(visible)
        assert out["image"].shape == (3, 64, 64)
        for mask, seg in zip(out["instances"].gt_masks, visible, strict=True):
            assert torch.equal(mask, ids[0] == seg["id"])
        kept = [j for j, sid in enumerate(annotated_ids) if sid in present]
        assert out["tgt_pan_idx"].tolist() == [
            next(p for p, s in enumerate(visible) if s["id"] == annotated_ids[j]) for j in kept
        ]
        for key in ("occlusion_matrix", "depth_matrix"):
            assert torch.equal(out[key], base[key][kept][:, kept])
        sizes.add(len(kept))
    assert len(sizes) > 1  # some instances were cropped away in some draws


def test_from_config_released_behaviour_and_augment(synthetic):
    record = DatasetCatalog.get("synthetic_instaorder_val")[0]
    cfg = get_cfg()
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.GEOMETRIC_PREDICTOR.TASK = "o"
    mapper = build_dataset_mapper(cfg, is_train=True)
    assert mapper.augmentation is None  # AUGMENT False: native resolution, no flip
    first = mapper(dict(record))
    assert torch.equal(first["image"], mapper(dict(record))["image"])
    cfg.INPUT.AUGMENT = True
    cfg.INPUT.IMAGE_SIZE = 64
    cfg.MODEL.GEOMETRIC_PREDICTOR.INPUT_SIZE = 64
    out = build_dataset_mapper(cfg, is_train=True)(dict(record))
    assert out["image"].shape == (3, 64, 64)
    assert "low_image" not in out  # the pairwise head makes its own image input
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 48, 100
    test_out = build_dataset_mapper(cfg, is_train=False)(dict(record))
    assert test_out["image"].shape == (3, 48, 48)
    assert (test_out["height"], test_out["width"]) == (96, 96)


def test_fewer_than_two_and_no_instances(synthetic):
    record = DatasetCatalog.get("synthetic_instaorder_val")[0]
    record = dict(record, instaorder=dict(record["instaorder"]))
    pan = record["instaorder"]["pan_instance_ids"]
    record["instaorder"]["pan_instance_ids"] = [pan[0]] + [-1] * (len(pan) - 1)
    out = InstaOrderPanopticMapper(is_train=True)(record)
    assert out["tgt_pan_idx"].shape == (1,) and out["depth_matrix"].tolist() == [[-1]]
    # a crop of nothing but unlabelled pixels: instances present but empty
    empty = InstaOrderPanopticMapper(
        is_train=True,
        augmentation=lambda image, ids: (image[:, :4, :4], ids[:, :4, :4] * 0),
    )(dict(DatasetCatalog.get("synthetic_instaorder_val")[0]))
    assert len(empty["instances"]) == 0 and empty["instances"].gt_masks.shape == (0, 4, 4)
    assert empty["instances"].gt_boxes.shape == (0, 4)
    assert empty["occlusion_matrix"].shape == (0, 0) and empty["tgt_pan_idx"].numel() == 0
