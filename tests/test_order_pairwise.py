"""InstaOrderNet network, pair inputs, symmetrisation and the PairwiseResNet order head."""

from __future__ import annotations

import pytest
import torch

from instaformer.config import get_cfg
from instaformer.instaordernet.inputs import PatchModeInputs, ResizeModeInputs, pair_windows
from instaformer.instaordernet.network import (
    instaordernet_d,
    instaordernet_o,
    instaordernet_od,
    load_instaordernet_checkpoint,
)
from instaformer.instaordernet.symmetrisation import (
    all_pairs,
    depth_matrix_from_pairs,
    occlusion_matrix_from_pairs,
    symmetrise_depth,
    symmetrise_occlusion,
)
from instaformer.modeling.order import OrderInputs, PairwiseResNet, build_order_head


def test_parameter_counts_of_the_three_flavours():
    # [ION 2]
    expected = {
        instaordernet_o: 23_518_402,
        instaordernet_d: 23_520_451,
        instaordernet_od: 23_524_549,
    }
    for build, count in expected.items():
        with torch.device("meta"):
            model = build()
        assert sum(p.numel() for p in model.parameters()) == count
    with torch.device("meta"):
        od = instaordernet_od()
    assert od.conv1.weight.shape == (64, 5, 7, 7)
    assert od.fc_occ.weight.shape == (2, 2048) and od.fc_depth.weight.shape == (3, 2048)


def test_symmetrisation_example_and_antisymmetry():
    # [ION 14]: sigmoid(z01) = (0.30, 0.90), sigmoid(z10) = (0.70, 0.20)
    logit = torch.special.logit
    z01, z10 = logit(torch.tensor([[0.30, 0.90]])), logit(torch.tensor([[0.70, 0.20]]))
    probs = symmetrise_occlusion(z01, z10)
    torch.testing.assert_close(probs, torch.tensor([[0.80, 0.25]]))
    ab, ba = torch.randn(20, 2), torch.randn(20, 2)
    torch.testing.assert_close(symmetrise_occlusion(ba, ab), symmetrise_occlusion(ab, ba).flip(1))
    ab, ba = torch.randn(20, 3), torch.randn(20, 3)
    fwd, bwd = symmetrise_depth(ab, ba), symmetrise_depth(ba, ab)
    torch.testing.assert_close(bwd, fwd[:, [1, 0, 2]])
    torch.testing.assert_close(fwd.sum(1), torch.ones(20))
    # decisions in the matrix are antisymmetric: D[i, j] = 1 <=> D[j, i] = 0
    n = 5
    pairs = all_pairs(n)
    dmat = depth_matrix_from_pairs(pairs, symmetrise_depth(ab[:10], ba[:10]), n).argmax(-1)
    off = ~torch.eye(n, dtype=torch.bool)
    strict = off & (dmat != 2)
    assert torch.equal((dmat == 1)[strict], (dmat.t() == 0)[strict])
    assert torch.equal((dmat == 2) & off, (dmat.t() == 2) & off)
    omat = occlusion_matrix_from_pairs(pairs, symmetrise_occlusion(ab[:10, :2], ba[:10, :2]), n)
    assert torch.equal(omat.diagonal(), torch.zeros(n))


def test_resize_and_patch_inputs():
    image = torch.rand(3, 40, 60)
    masks = torch.zeros(3, 40, 60)
    masks[0, :10, :10] = 1
    masks[1, 20:, 30:] = 1
    masks[2, 5:15, 40:50] = 1
    pairs = torch.tensor([[0, 1], [1, 0], [2, 0]])
    x = ResizeModeInputs(image, masks, size=32)(pairs)
    assert x.shape == (3, 5, 32, 32)
    torch.testing.assert_close(x[0, 0], x[1, 1])
    assert set(x[:, :2].unique().tolist()) == {0.0, 1.0}
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [30.0, 20.0, 30.0, 20.0], [40.0, 5.0, 10, 10]])
    # union of boxes 0 and 1: 60 x 40, side = max(sqrt(2*60*40), 66, 44) = 69.28 -> 69
    window = pair_windows(boxes, torch.tensor([[0, 1]]))[0].tolist()
    assert window == [-4, -14, 69]
    p = PatchModeInputs(image, masks, boxes, size=32, enlarge=None)(pairs)
    assert p.shape == (3, 5, 32, 32) and torch.isfinite(p).all()


def _small_pairwise(tasks_builder=instaordernet_od, size=64, chunk=64):
    torch.manual_seed(0)
    return PairwiseResNet(network=tasks_builder(), input_size=size, max_pairs_per_batch=chunk)


def test_pairwise_batched_equals_one_pair_at_a_time():
    batched = _small_pairwise(chunk=64).eval()
    single = _small_pairwise(chunk=1).eval()
    single.load_state_dict(batched.state_dict())
    n = 4
    masks = torch.zeros(n, 16, 16, dtype=torch.uint8)
    for i in range(n):
        masks[i, 4 * i : 4 * i + 4, 2 * i : 2 * i + 9] = 1
    image = torch.randn(3, 64, 64)
    with torch.no_grad():
        a = batched(masks, image)
        b = single(masks, image)
    for task, k in (("occlusion", 2), ("depth", 3)):
        assert a[task][0].shape == (n, n, k)
        torch.testing.assert_close(a[task][0], b[task][0], atol=1e-5, rtol=1e-5)
    # occlusion: softmax of the returned log-probs = (1 - p, p); depth rows sum to one
    torch.testing.assert_close(a["occlusion"][0].exp().sum(-1), torch.ones(n, n))
    torch.testing.assert_close(a["depth"][0].exp().sum(-1), torch.ones(n, n))
    # swapping the instances transposes the relations
    perm = torch.tensor([1, 0, 3, 2])
    with torch.no_grad():
        c = batched(masks[perm], image)
    torch.testing.assert_close(
        c["occlusion"][0], a["occlusion"][0][perm][:, perm], atol=1e-5, rtol=1e-5
    )


def test_pairwise_small_n_and_missing_image():
    head = _small_pairwise(instaordernet_o).eval()
    image = torch.randn(3, 64, 64)
    for n in (0, 1):
        out = head(torch.ones(n, 8, 8), image)
        assert out["occlusion"][0].shape == (n, n, 2)
    with pytest.raises(ValueError, match="image"):
        head.scores(
            OrderInputs(
                mask_embed=torch.randn(2, 8),
                masks=torch.ones(2, 8, 8, dtype=torch.bool),
                mask_features=torch.randn(8, 8, 8),
                image=None,
                image_format="RGB",
                valid_size=(8, 8),
            )
        )


def test_pairwise_state_dict_accepts_both_layouts_and_released_checkpoint(tmp_path):
    head = _small_pairwise(instaordernet_d)
    state = head.state_dict()
    assert all(k.startswith("instaordernet.module.") for k in state)
    flat = {
        k.replace("instaordernet.module.", "instaordernet."): v.clone() for k, v in state.items()
    }
    reference = {k: v.clone() for k, v in state.items()}
    for v in head.state_dict().values():
        v.zero_()
    head.load_state_dict(flat, strict=True)
    torch.testing.assert_close(head.state_dict(), reference)
    # released file layout: {"step", "state_dict": {"module.<key>": ...}, "optimizer"}
    released = {"module." + k[len("instaordernet.module.") :]: v for k, v in state.items()}
    path = tmp_path / "InstaOrder_InstaOrderNet_d.pth.tar"
    torch.save({"step": 1, "state_dict": released, "optimizer": {}}, path)
    net = instaordernet_d()
    load_instaordernet_checkpoint(net, path)
    torch.testing.assert_close(net.fc.weight, state["instaordernet.module.fc.weight"])
    with torch.device("meta"), pytest.raises(ValueError, match="missing: fc_occ.weight"):
        load_instaordernet_checkpoint(instaordernet_od(), path)
    # the builder finds the released file name inside a folder
    cfg = get_cfg()
    gp = cfg.MODEL.GEOMETRIC_PREDICTOR
    gp.NAME, gp.TASK, gp.INPUT_SIZE = "PairwiseResNet", "d", 384
    gp.USE_INSTAORDERNET_WEIGHTS, gp.INSTAORDERNET_WEIGHTS_PATH = True, str(tmp_path)
    built = build_order_head(cfg)
    torch.testing.assert_close(built.instaordernet.module.fc.bias, net.fc.bias)


def test_instaordernet_weights_without_a_path_are_named(caplog):
    """``USE_INSTAORDERNET_WEIGHTS`` with no ``INSTAORDERNET_WEIGHTS_PATH`` (the released pairwise
    configs) loads nothing at build: a warning names both keys and where the weights come from."""
    cfg = get_cfg()
    gp = cfg.MODEL.GEOMETRIC_PREDICTOR
    gp.NAME, gp.TASK, gp.USE_INSTAORDERNET_WEIGHTS = "PairwiseResNet", "o", True
    with torch.device("meta"), caplog.at_level("WARNING", logger="instaformer"):
        build_order_head(cfg)
    (record,) = caplog.records
    message = record.getMessage()
    assert "USE_INSTAORDERNET_WEIGHTS is True" in message
    assert "INSTAORDERNET_WEIGHTS_PATH is empty" in message and "MODEL.WEIGHTS" in message
    caplog.clear()
    gp.USE_INSTAORDERNET_WEIGHTS = False
    with torch.device("meta"), caplog.at_level("WARNING", logger="instaformer"):
        build_order_head(cfg)
    assert not caplog.records
