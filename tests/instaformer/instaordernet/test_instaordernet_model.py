"""InstaOrderNet meta-architecture: flavours from the released configs, train steps, batched and
symmetrised inference, weight loading."""

from __future__ import annotations

import math

import pytest
import torch

from instaformer.config import setup_cfg
from instaformer.instaordernet.losses import depth_loss, occlusion_loss, swap_targets
from instaformer.instaordernet.meta_arch import InstaOrderNet, load_instaordernet_weights
from instaformer.instaordernet.predict import predict_orders
from mask2former.modeling.registry import META_ARCH_REGISTRY
from mask2former.structures import masks_to_xywh

CONFIGS = "configs/instaordernet"
# docs/reference.md [ION 2] / [ION 7].
FLAVOURS = {
    "o": (23_518_402, "patch", 256, 1e-3, 86_000),
    "d": (23_520_451, "resize", 384, 1e-4, 60_000),
    "od": (23_524_549, "resize", 384, 1e-4, 60_000),
}
MANIFEST = {
    "o": "configs__instaorder__occlusion__pairwise__occlusion_config.tsv",
    "d": "configs__instaorder__depth__pairwise__depth_config.tsv",
    "od": "configs__instaorder__occlusion_depth__pairwise__occlusion_depth_config.tsv",
}


def _cfg(task: str, size: int = 64, **overrides):
    opts = ["MODEL.DEVICE", "cpu", "MODEL.INSTAORDERNET.INPUT_SIZE", str(size)]
    for key, value in overrides.items():
        opts += [f"MODEL.INSTAORDERNET.{key}", str(value)]
    return setup_cfg(f"{CONFIGS}/InstaOrderNet_{task}.yaml", opts)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {task: META_ARCH_REGISTRY.get("InstaOrderNet")(_cfg(task)) for task in FLAVOURS}


@pytest.fixture(scope="module")
def calibrated():
    """Small-input o and od models whose outputs vary with the input: BatchNorm statistics set
    from one batch and heads scaled up (the released initialisation gives near-constant logits,
    whose decisions would be ties)."""
    torch.manual_seed(0)
    out = {}
    for task in ("o", "od"):
        model = InstaOrderNet(_cfg(task, size=32))
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # cumulative average: one batch sets the statistics
        model.train()
        with torch.no_grad():
            model.net(torch.randn(8, 5, 32, 32) + torch.tensor([0.3, 0.3, 0, 0, 0])[:, None, None])
            for name in model.net.head_names.values():
                getattr(model.net, name).weight.mul_(30.0)
        out[task] = model.double().eval()  # float64: batch-size effects far below tolerances
    return out


def _scene(k: int = 4, h: int = 48, w: int = 64):
    """An RGB uint8 image with k overlapping rectangles, their masks and xywh boxes."""
    gen = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
    masks = torch.zeros(k, h, w, dtype=torch.bool)
    for i in range(k):
        masks[i, 4 + 6 * i : 24 + 6 * i, 5 + 10 * i : 30 + 8 * i] = True
    return image, masks, masks_to_xywh(masks)


def test_flavours_match_spec(models, reference_dir):
    for task, (count, mode, size, lr, iters) in FLAVOURS.items():
        cfg = setup_cfg(f"{CONFIGS}/InstaOrderNet_{task}.yaml")
        net = cfg.MODEL.INSTAORDERNET
        assert (net.TASK, net.INPUT_MODE, net.INPUT_SIZE) == (task, mode, size)
        assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER) == (lr, iters)
        assert tuple(cfg.SOLVER.STEPS) == (32000, 48000) and cfg.SOLVER.WARMUP_ITERS == 0
        assert cfg.SOLVER.OPTIMIZER == "SGD" and cfg.SOLVER.WEIGHT_DECAY_NORM == 1e-4
        model = models[task]
        assert sum(p.numel() for p in model.parameters()) == count
        # Every state-dict entry of the released network, with the released shape.
        prefix = "geometric_predictor.instaordernet.module."
        expected = {}
        for line in (reference_dir / "manifests" / MANIFEST[task]).read_text().splitlines():
            name, shape = line.split("\t")[:2]
            if name.startswith(prefix):
                expected["net." + name[len(prefix) :]] = shape
        ours = {k: "x".join(map(str, v.shape)) or "scalar" for k, v in model.state_dict().items()}
        assert ours == expected


@pytest.mark.parametrize("task", list(FLAVOURS))
def test_train_step_finite_loss_and_gradients(task):
    torch.manual_seed(0)
    model = InstaOrderNet(_cfg(task, size=32))
    model.train()
    batch = []
    for b in range(3):
        batch.append(
            {
                "pair_input": torch.randn(5, 32, 32),
                "occlusion_target": torch.tensor([float(b == 0), float(b == 1)]),
                "depth_target": torch.tensor(b % 3),
                "overlap": torch.tensor(b == 2),
            }
        )
    losses = model(batch)
    expected = {
        "o": {"loss_occlusion"},
        "d": {"loss_depth"},
        "od": {"loss_occlusion", "loss_depth"},
    }
    assert set(losses) == expected[task]
    total = sum(losses.values())
    assert math.isfinite(total.item()) and total.item() > 0
    total.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    heads = {"o": "net.fc.", "d": "net.fc.", "od": "net.fc_"}
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert any(n.startswith(heads[task]) for n, _ in model.named_parameters())


def test_losses_swap_and_double_softmax():
    occ = torch.tensor([[0.0, 1.0], [1.0, 1.0], [-1.0, -1.0]])
    dep = torch.tensor([0, 1, 2, -1])
    occ_sw, dep_sw = swap_targets(occ, dep)
    assert occ_sw.tolist() == [[1.0, 0.0], [1.0, 1.0], [-1.0, -1.0]]
    assert dep_sw.tolist() == [1, 0, 2, -1]
    logits = torch.tensor([[50.0, -50.0, 0.0], [-50.0, 50.0, 0.0]])
    target = torch.tensor([1, 0])  # confidently wrong
    overlap = torch.tensor([False, False])
    fixed = depth_loss(logits, target, overlap, overlap_weight=0.1, distinct_weight=0.9)
    reference = depth_loss(
        logits, target, overlap, overlap_weight=0.1, distinct_weight=0.9, double_softmax=True
    )
    assert float(fixed) > 40  # logits CE grows without bound
    # [ION 5]: the double softmax confines the per-pair loss to [log(1 + 2/e), log(e + 2)].
    assert math.log(1 + 2 / math.e) - 1e-4 <= float(reference) / 0.9 <= math.log(math.e + 2)
    # Subsets are averaged separately and weighted; ignored targets do not count.
    mixed = depth_loss(
        torch.zeros(3, 3),
        torch.tensor([0, 2, -1]),
        torch.tensor([True, False, False]),
        overlap_weight=0.1,
        distinct_weight=0.9,
    )
    assert float(mixed) == pytest.approx(math.log(3.0))
    assert float(occlusion_loss(torch.zeros(2, 2), -torch.ones(2, 2))) == 0.0


def test_batched_equals_one_pair_at_a_time(calibrated):
    image, masks, boxes = _scene(k=3)
    for task in ("o", "od"):
        model = calibrated[task]
        model.pairs_per_forward = 64
        batched = model.predict(image, masks, boxes)
        model.pairs_per_forward = 1
        single = model.predict(image, masks, boxes)
        model.pairs_per_forward = 64
        assert batched.keys() == single.keys()
        for key in batched:
            assert torch.allclose(batched[key], single[key], rtol=0, atol=1e-10), (task, key)


def test_symmetrised_outputs_are_consistent(calibrated):
    image, masks, boxes = _scene()
    model = calibrated["od"]
    out = model.predict(image, masks, boxes)
    # The decisions are not all ties (the test would be vacuous otherwise).
    assert len(set(out["depth"][0, 1:].tolist())) > 1 or len(set(out["depth"][1:, 0].tolist())) > 1
    depth, occ_prob = out["depth"], out["occlusion_prob"]
    k = masks.shape[0]
    off = ~torch.eye(k, dtype=torch.bool)
    # Depth: strict relations are antisymmetric, "same" symmetric, diagonal -1.
    strict = off & (depth != 2)
    assert torch.equal(depth[strict], 1 - depth.t()[strict])
    assert torch.equal(depth == 2, depth.t() == 2)
    assert (depth.diagonal() == -1).all() and set(depth[off].tolist()) <= {0, 1, 2}
    # Depth probabilities of (j, i) swap "closer" and "farther" of (i, j).
    assert torch.allclose(out["depth_prob"].transpose(0, 1), out["depth_prob"][..., [1, 0, 2]])
    assert torch.equal(out["occlusion"], (occ_prob > 0.5).long())
    assert (out["occlusion"].diagonal() == 0).all()
    # Listing the instances in another order permutes every output the same way.
    perm = torch.tensor([2, 0, 3, 1])
    permuted = model.predict(image, masks[perm], boxes[perm])
    for key in ("occlusion_prob", "depth_prob"):
        assert torch.allclose(permuted[key], out[key][perm][:, perm], rtol=0, atol=1e-10), key
    # Decisions agree wherever they are not near-ties.
    top2 = out["depth_prob"].topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1] > 1e-4)[perm][:, perm]
    assert torch.equal(permuted["depth"][clear], out["depth"][perm][:, perm][clear])
    clear = ((out["occlusion_prob"] - 0.5).abs() > 1e-4)[perm][:, perm]
    assert torch.equal(permuted["occlusion"][clear], out["occlusion"][perm][:, perm][clear])


def test_predict_orders_inputs_and_degenerate_counts(calibrated):
    image, masks, _ = _scene()
    model = calibrated["od"]
    hwc = image.permute(1, 2, 0).numpy()
    rgb = predict_orders(model, hwc, masks.numpy())
    bgr = predict_orders(model, hwc[:, :, ::-1], masks, image_format="BGR")
    assert torch.equal(rgb["depth"], bgr["depth"])
    assert torch.allclose(rgb["occlusion_prob"], bgr["occlusion_prob"])
    one = predict_orders(model, image, masks[:1])
    assert one["depth"].tolist() == [[-1]] and one["occlusion"].tolist() == [[0]]
    none = predict_orders(model, image, masks[:0])
    assert none["depth"].shape == (0, 0) and none["depth_prob"].shape == (0, 0, 3)
    with pytest.raises(ValueError, match="image size"):
        predict_orders(model, image, masks[:, :10])


def test_load_weights_released_and_project_checkpoints(models, tmp_path):
    source = models["d"]
    released = {"module." + k: v.clone() for k, v in source.net.state_dict().items()}
    path = tmp_path / "InstaOrder_InstaOrderNet_d.pth.tar"
    torch.save({"step": 60000, "state_dict": released}, path)
    target = InstaOrderNet(_cfg("d"))
    load_instaordernet_weights(_cfg("d"), target, path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    own = tmp_path / "model_final.pth"
    torch.save({"model": source.state_dict(), "iteration": 3}, own)
    again = InstaOrderNet(_cfg("d"))
    load_instaordernet_weights(_cfg("d"), again, own)
    assert torch.equal(again.net.fc.weight, source.net.fc.weight)
    with pytest.raises(ValueError, match="fc_depth"):
        load_instaordernet_weights(_cfg("od"), InstaOrderNet(_cfg("od")), path)
    with pytest.raises(FileNotFoundError):
        load_instaordernet_weights(_cfg("d"), again, tmp_path / "missing.pth")
