"""tools/export_model.py (torch.export): the exported programs of the tiny od model match it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from scripts import load_script
from test_demo_predictor import LOW_THRESHOLDS, OD_CONFIG, make_scene, tiny_cfg

from instaformer.deploy import export as deploy
from instaformer.modeling.meta_arch import order_results
from instaformer.modeling.order import select_segment_queries
from instaformer.predictor import Predictor
from mask2former.utils.outputs import RECORD_NAME

REPO = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 64, 96  # multiples of SIZE_DIVISIBILITY (32): no padding


def _export_module():
    return load_script("tools/export_model.py")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Weights of a random-init tiny od model, and the tool's output directory for them."""
    torch.manual_seed(0)
    model = Predictor(tiny_cfg()).model  # blind inference mode, as the tool builds it
    root = tmp_path_factory.mktemp("export")
    weights = root / "model.pth"
    torch.save({"model": model.state_dict()}, weights)
    out = root / "programs"
    argv = ["--config-file", str(OD_CONFIG), "--output", str(out), "--height", str(HEIGHT)]
    argv += ["--width", str(WIDTH), "--max-instances", "16", *LOW_THRESHOLDS]
    argv += ["MODEL.WEIGHTS", str(weights)]
    assert _export_module().main(argv) == 0
    return model, out


def test_exported_network_and_order_head_reproduce_the_model(exported):
    """Exported network + exported head + the Python post-processing = the eager model."""
    model, out = exported
    assert sorted(p.name for p in out.iterdir()) == [RECORD_NAME, "network.pt2", "order_head.pt2"]
    network = torch.export.load(str(out / "network.pt2")).module()
    head = torch.export.load(str(out / "order_head.pt2")).module()

    image = torch.from_numpy(make_scene(HEIGHT, WIDTH)[0].transpose(2, 0, 1).copy())
    with torch.no_grad():
        eager = model([{"image": image, "height": HEIGHT, "width": WIDTH}])[0]
        eager_net = deploy.NetworkWrapper(model)(image[None].float())
        pred_logits, pred_masks, mask_embed, mask_features = network(image[None].float())
    assert (
        deploy.max_abs_diff(eager_net, (pred_logits, pred_masks, mask_embed, mask_features)) < 1e-3
    )

    queries, segment_ids = select_segment_queries(eager["panoptic_seg"][1])
    k = len(queries)
    assert k >= 2 and segment_ids == eager["order_segment_ids"].tolist()
    masks = (pred_masks[0, queries] > 0).float()
    logits = head(mask_embed[0, queries], masks, mask_features[0])
    tasks = ("occlusion", "depth")
    assert [tuple(t.shape) for t in logits] == [(k, k, 2), (k, k, 3)]
    orders = order_results({t: [x] for t, x in zip(tasks, logits, strict=True)}, tasks)
    for task in tasks:
        assert torch.allclose(orders[f"{task}_prob"], eager[f"{task}_prob"], atol=1e-4)
        assert torch.equal(orders[task], eager[task])


def test_exported_order_head_takes_any_instance_count(exported):
    model, out = exported
    head = torch.export.load(str(out / "order_head.pt2")).module()
    eager = deploy.OrderHeadWrapper(model.geometric_predictor)
    assert model.geometric_predictor.dense_feature_attention is False  # restored after export
    c = tiny_cfg().MODEL.SEM_SEG_HEAD.MASK_DIM
    h, w = HEIGHT // 4, WIDTH // 4
    features = torch.randn(c, h, w)
    for n in (2, 5, 16):
        embed = torch.randn(n, c)
        masks = (torch.rand(n, h, w) > 0.6).float()
        with torch.no_grad():
            reference = eager(embed, masks, features)  # sparse feature attention
        result = head(embed, masks, features)
        assert [tuple(t.shape) for t in result] == [(n, n, 2), (n, n, 3)]
        assert deploy.max_abs_diff(reference, result) < 1e-4
    with pytest.raises(Exception, match="<= 16"):
        head(torch.randn(17, c), torch.zeros(17, h, w), features)


def test_find_order_head_refuses_heads_it_cannot_export():
    with pytest.raises(ValueError, match="Linear"):
        deploy.find_order_head(SimpleNamespace(geometric_predictor=torch.nn.Linear(1, 1)))
    assert deploy.find_order_head(SimpleNamespace(geometric_predictor=None)) is None


def test_exported_network_saves_and_reloads_for_plain_mask2former(tmp_path):
    """Without an order head the tool exports the segmentation network only."""
    config = REPO / "configs" / "synthetic" / "maskformer2_R50_tiny.yaml"
    out = tmp_path / "programs"
    argv = ["--config-file", str(config), "--output", str(out), "--height", "64", "--width", "64"]
    assert _export_module().main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [RECORD_NAME, "network.pt2"]
    image = torch.rand(1, 3, 64, 64) * 255
    outputs = torch.export.load(str(out / "network.pt2")).module()(image)
    assert outputs[0].shape[:2] == (1, 20) and outputs[1].shape == (1, 20, 16, 16)
