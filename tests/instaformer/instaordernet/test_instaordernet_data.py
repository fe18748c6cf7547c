"""InstaOrderNet data on the synthetic twin: pair drawing ([ION 6]), targets ([ION 4]), test images,
loaders, and evaluation through the project's evaluators."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instaformer.config import setup_cfg
from instaformer.data import make_synthetic_dataset, register_synthetic_instaorder
from instaformer.data.relations import build_order_matrices
from instaformer.instaordernet.data import (
    DepthPairItems,
    InstaOrderNetMapper,
    build_evaluators,
    build_test_loader,
    build_train_loader,
    decode_segmentation,
    training_items,
)
from instaformer.instaordernet.depth_baseline import MonocularDepthOrder
from instaformer.instaordernet.meta_arch import InstaOrderNet
from mask2former.data.catalog import DatasetCatalog
from mask2former.evaluation.evaluator import inference_on_dataset

TINY = "configs/instaordernet/synthetic_od_tiny.yaml"


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("instaordernet_synthetic"))
    make_synthetic_dataset(root, num_train=24, num_val=4, image_size=64, seed=3)
    register_synthetic_instaorder(root)
    return {
        split: DatasetCatalog.get(f"synthetic_instaorder_{split}_instances")
        for split in ("train", "val")
    }


def _cfg(task: str = "od", mode: str = "resize", size: int = 32):
    return setup_cfg(
        TINY,
        [
            "MODEL.INSTAORDERNET.TASK",
            task,
            "MODEL.INSTAORDERNET.INPUT_MODE",
            mode,
            "MODEL.INSTAORDERNET.INPUT_SIZE",
            str(size),
        ],
    )


def _mapper(cfg, is_train: bool) -> InstaOrderNetMapper:
    return InstaOrderNetMapper(**InstaOrderNetMapper.from_config(cfg, is_train))


def test_training_items(records):
    train = records["train"]
    depth_items = training_items(train, "d")
    assert isinstance(depth_items, DepthPairItems)
    assert len(depth_items) == sum(len(r["instaorder"]["depth"]) for r in train)
    last = depth_items[len(depth_items) - 1]
    assert last["depth_entry"] == len(train[-1]["instaorder"]["depth"]) - 1
    occ_items = training_items(train, "o")
    assert 0 < len(occ_items) <= len(train)
    assert all(r["instaorder"]["occlusion"] for r in occ_items)
    with pytest.raises(ValueError, match="TASK"):
        training_items(train, "x")


@pytest.mark.parametrize(("task", "mode"), [("o", "patch"), ("od", "resize")])
def test_train_mapper_targets_follow_the_matrices(records, task, mode):
    np.random.seed(0)
    mapper = _mapper(_cfg(task, mode), is_train=True)
    items = training_items(records["train"], task)
    positives = swaps = 0
    for index in range(min(len(items), 12)):
        item = items[index]
        out = mapper(item)
        a, b = out["pair"]
        mats = build_order_matrices(item["instaorder"])
        assert out["pair_input"].shape == (5, 32, 32)
        masks = out["pair_input"][:2]
        assert set(masks.unique().tolist()) <= {0.0, 1.0}
        assert out["occlusion_target"].tolist() == [
            mats["occlusion"][b, a],
            mats["occlusion"][a, b],
        ]
        expected_depth = {1: 0, 0: 1, 2: 2, -1: -1}[int(mats["depth"][a, b])]
        assert out["depth_target"].item() == expected_depth
        assert out["overlap"].item() == (mats["overlap"][a, b] == 1)
        positives += int(mats["occlusion"][a, b] == 1)
        if task == "od":
            i, _, j = item["instaorder"]["depth"][item["depth_entry"]]["order"].partition("<")
            if not j:
                i, _, j = item["instaorder"]["depth"][item["depth_entry"]]["order"].partition("=")
            assert {a, b} == {int(i), int(j)}
            swaps += int((a, b) != (int(i), int(j)))
    if task == "o":
        assert positives > 0  # occluding cells are drawn (70% of the time before the swap)
    else:
        assert 0 < swaps < 12  # A/B swapped about half of the time


def test_test_mapper_and_masks(records):
    record = records["val"][0]
    out = _mapper(_cfg(), is_train=False)(record)
    k = len(record["instaorder"]["instance_ids"])
    assert out["image"].shape == (3, 64, 64) and out["image"].dtype == torch.uint8
    assert out["instances"].gt_masks.shape == (k, 64, 64)
    for key in ("occlusion_matrix", "depth_matrix", "overlap_matrix", "count_matrix"):
        assert out[key].shape == (k, k)
    assert (out["depth_matrix"].diagonal() == -1).all()
    first = record["annotations"][0]
    mask = decode_segmentation(first["segmentation"], 64, 64)
    assert torch.equal(out["instances"].gt_masks[0], torch.from_numpy(mask).bool())
    x0, y0, w, h = first["bbox"]
    assert out["instances"].gt_boxes[0].tolist() == pytest.approx([x0, y0, x0 + w, y0 + h])
    with pytest.raises(ValueError, match="depth_entry"):
        _mapper(_cfg(), is_train=True)(record)


def test_loaders_train_step_and_evaluation(records):
    torch.manual_seed(0)
    cfg = _cfg()
    batch = next(iter(build_train_loader(cfg, start_iter=0)))
    assert len(batch) == cfg.SOLVER.IMS_PER_BATCH
    model = InstaOrderNet(cfg)
    model.train()
    losses = model(batch)
    sum(losses.values()).backward()
    assert set(losses) == {"loss_occlusion", "loss_depth"}
    loader = build_test_loader(cfg, "synthetic_instaorder_val_instances")
    results = inference_on_dataset(
        model, loader, build_evaluators(cfg, "synthetic_instaorder_val_instances")
    )
    assert results["occlusion_order"]["num_images"] == 4
    assert results["depth_order"]["num_images"] == 4
    assert 0.0 <= results["depth_order"]["ovlOX/WHDR_all"] <= 100.0
    assert 0.0 <= results["occlusion_order"]["f1"] <= 100.0


def test_oracle_depth_baseline_scores_zero_whdr(records):
    """The baseline fed with each instance's true depth rank makes no strict-pair error."""
    cfg = _cfg()
    mapper = _mapper(cfg, is_train=False)
    inputs = [mapper(r) for r in records["val"]]
    outputs = []
    for inp in inputs:
        depth = inp["depth_matrix"]
        # Rank of each instance = number of instances labelled closer than it (ties share ranks).
        rank = (depth == 0).sum(dim=1).float()
        masks = inp["instances"].gt_masks
        canvas = torch.full(masks.shape[-2:], 100.0)  # background: far away
        for k in range(len(masks)):
            canvas[masks[k]] = rank[k]
        baseline = MonocularDepthOrder(lambda image, c=canvas: c, clip_percentiles=None)
        outputs.append({"depth": baseline.predict(inp["image"], masks)["depth"]})
    evaluator = build_evaluators(cfg, "synthetic_instaorder_val_instances")[1]
    evaluator.reset()
    evaluator.process(inputs, outputs)
    result = evaluator.evaluate()["depth_order"]
    assert result["num_images"] == len(inputs)
    assert result["ovlOX/WHDR_all"] == 0.0
