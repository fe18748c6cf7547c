"""Device checks without a device: the models on fake CUDA tensors (``FakeTensorMode``).

Under ``torch._subclasses.fake_tensor.FakeTensorMode`` a tensor on ``"cuda"`` carries its shape,
dtype and device but no data, so it exists without a GPU; an operation that mixes a CUDA tensor
with a (non-scalar) CPU tensor raises, as it would on a GPU. The models are built on the
``meta`` device (nothing allocated; ``torch.nn.init`` leaves meta tensors alone) and moved with
``to_empty(device="cuda")`` inside the mode, as ``build_model`` + ``.to("cuda")`` would; the
inputs are moved to fake CUDA too. Any tensor the code creates on the CPU during a forward (a
``torch.zeros(...)`` without ``device=``) then meets a CUDA tensor and fails the test; the
negative test shows a deliberately wrong tensor failing that way.

Checked for Swin-T od and R50 od (the released configs): the network forward (training and
evaluation mode, both the Triton and the PyTorch deformable-attention paths), semantic
inference, the order head with given masks, the Mask2Former loss terms with the matcher's cost
on the device and its CPU assignment replaced by fixed indices (CPU tensors, as SciPy's
assignment gives), the order loss term, the Predictor's preprocessing and network; and
InstaOrderNet^od's batched forward over all pairs.

What cannot run this way (also in docs/install.md, "GPU checks without a GPU"): the backward
pass (autograd asks the CUDA driver for a context: ``hasPrimaryContext expects a valid device
index``, also through ``torch.func.grad`` and AOTAutograd); the Hungarian assignment (SciPy on
the CPU, by design); every step whose output shape depends on tensor values: the covered-pixel
order-head attention (``nonzero``; the same function in its dense formulation runs here, and its
per-pixel step on a fixed pixel count), the order losses' selection of labelled pairs, the
normalisation of the mask losses (``num_masks``, read back as a float), panoptic and instance
post-processing, InstaOrderNet's patch-mode crops (windows read back from the boxes) and the
OpenCV resizes that make its inputs (CPU arrays by design; the test runs them on stand-in
arrays of the same shapes and checks everything after them).
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily

from instaformer.config import setup_cfg
from instaformer.instaordernet import meta_arch as instaordernet_meta_arch
from instaformer.instaordernet.inputs import ResizeModeInputs
from instaformer.modeling import build_model
from mask2former.modeling.ops import dispatch
from mask2former.structures import Instances

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "swin_t_od": "configs/instaorder/occlusion_depth/all/swin/maskformer2_swin_tiny_bs16_50ep.yaml",
    "r50_od": "configs/instaorder/occlusion_depth/all/occlusion_depth_config.yaml",
}
INSTAORDERNET_OD = "configs/instaordernet/InstaOrderNet_od.yaml"
HEIGHT, WIDTH, N, STUFF = 64, 96, 4, 2
CUDA = torch.device("cuda", 0)


def _meta_model(config: str) -> nn.Module:
    cfg = setup_cfg(str(REPO / config), ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "meta"])
    with torch.device("meta"):
        return build_model(cfg)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def config_and_model(request: pytest.FixtureRequest) -> tuple[str, nn.Module]:
    """A released config and its model on the meta device."""
    return CONFIGS[request.param], _meta_model(CONFIGS[request.param])


@pytest.fixture(scope="module")
def instaordernet() -> nn.Module:
    return _meta_model(INSTAORDERNET_OD)


@pytest.fixture
def fake_mode():
    # Real CPU tensors meeting the mode become fake CPU tensors (the CPU constants the code keeps
    # on purpose, e.g. the order losses' class priors); mixing them with CUDA tensors raises.
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        yield mode


def _on_fake_cuda(model: nn.Module) -> nn.Module:
    """A copy of the meta model with fake CUDA parameters and buffers (call inside the mode)."""
    with unset_fake_temporarily():  # the copy of meta tensors, outside the mode
        model = copy.deepcopy(model)
    return model.to_empty(device="cuda")


def _real_input() -> dict:
    """An input with ground truth (``make_input`` of tools/benchmarks/instaformer.py), CPU."""
    spec = importlib.util.spec_from_file_location(
        "instaformer_benchmark", REPO / "tools" / "benchmarks" / "instaformer.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.make_input(N, STUFF, HEIGHT, WIDTH, torch.Generator().manual_seed(0))


def _to_cuda(mode: FakeTensorMode, value):
    return mode.from_tensor(value).to("cuda") if isinstance(value, torch.Tensor) else value


def _fake_cuda_input(mode: FakeTensorMode, x: dict) -> dict:
    """``x`` with every tensor (instances included) moved to fake CUDA."""
    out = {k: _to_cuda(mode, v) for k, v in x.items() if k != "instances"}
    inst = x["instances"]
    out["instances"] = Instances(
        inst.image_size,
        gt_classes=_to_cuda(mode, inst.gt_classes),
        gt_masks=_to_cuda(mode, inst.gt_masks),
    )
    return out


def _assert_cuda(tree, where: str) -> int:
    """Every tensor in a nest of dicts, lists and tuples is on CUDA; returns how many."""
    if isinstance(tree, torch.Tensor):
        assert tree.device == CUDA, f"{where}: {tree.device}"
        return 1
    if isinstance(tree, dict):
        return sum(_assert_cuda(v, f"{where}[{k!r}]") for k, v in tree.items())
    if isinstance(tree, (list, tuple)):
        return sum(_assert_cuda(v, f"{where}[{i}]") for i, v in enumerate(tree))
    return 0


def _network(model: nn.Module, x: dict, training: bool):
    model.train(training)
    with torch.set_grad_enabled(training):
        images, sizes = model.preprocess_image([x])
        outputs, embed, feats = model.run_network(images)
    return images, sizes, outputs, embed, feats


@pytest.mark.parametrize("backend", ["triton", "pytorch"])
def test_network_forward_and_semantic_inference(
    config_and_model, fake_mode: FakeTensorMode, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """Training and evaluation forward with either deformable-attention path (the Triton one
    through its fake kernel), then semantic inference: everything stays on CUDA."""
    monkeypatch.setenv(dispatch.BACKEND_ENV, backend)
    _, meta = config_and_model
    model = _on_fake_cuda(meta)
    x = _fake_cuda_input(fake_mode, _real_input())
    assert dispatch.select_path(x["image"].float())[0] == backend
    for training in (True, False):
        images, sizes, outputs, embed, feats = _network(model, x, training)
        # final layer, every auxiliary layer, embeddings and mask features
        assert _assert_cuda((outputs, embed, feats), f"training={training}") >= 2 + 2 * 9 + 2
        q = outputs["pred_logits"].shape[1]
        assert outputs["pred_masks"].shape == (1, q, HEIGHT // 4, WIDTH // 4)
        assert feats.shape[-2:] == (HEIGHT // 4, WIDTH // 4)
    padded = (images.shape[-2], images.shape[-1])
    with torch.no_grad():
        (result,) = model.inference(outputs, [x], sizes, padded, ("sem_seg",))
    sem_seg = result["sem_seg"]
    assert sem_seg.device == CUDA and sem_seg.shape[-2:] == (HEIGHT, WIDTH)


def test_order_head_with_given_masks(config_and_model, fake_mode: FakeTensorMode) -> None:
    """The order head on given mask logits (dense feature attention: the covered-pixel one is
    data-dependent) and the covered-pixel attention's per-pixel step on a fixed pixel count."""
    from instaformer.modeling.order.feature_attention import _in_mask_outputs

    _, meta = config_and_model
    model = _on_fake_cuda(meta).eval()
    head = model.geometric_predictor
    head.dense_feature_attention = True
    x = _fake_cuda_input(fake_mode, _real_input())
    h, w = HEIGHT // 4, WIDTH // 4
    dim = model.sem_seg_head.pixel_decoder.mask_dim  # C of mask embeddings and features
    q = 10
    mask_embed = torch.randn(q, dim, device="cuda")
    mask_logits = torch.randn(q, h, w, device="cuda")
    mask_features = torch.randn(dim, h, w, device="cuda")
    queries = torch.tensor([3, 0, 7, 1])  # CPU, as the query selection may give them
    with torch.no_grad():
        scores = model.run_order_head(queries, mask_embed, mask_logits, mask_features)
        bundle = model.order_inputs(
            queries, mask_embed, mask_logits, mask_features, image=x["image"], valid_size=(h - 1, w)
        )
        log_probs = head.log_probs(bundle)
    assert set(scores) == set(head.tasks) == set(log_probs)
    for task in head.tasks:
        assert len(scores[task]) == head.num_layers
        assert scores[task][-1].shape[:2] == (len(queries), len(queries))
    assert _assert_cuda((scores, log_probs), "order head") == 2 * len(head.tasks) * head.num_layers
    if head.features_transformer is not None:
        layer = head.features_transformer.layers[0]
        pixels = torch.randn(50, dim, device="cuda")
        count = torch.randint(1, 4, (50,), device="cuda")
        with torch.no_grad():
            out = _in_mask_outputs(layer, pixels, count, 4)
        assert out.shape == (50, dim) and out.device == CUDA


def test_loss_terms(
    config_and_model, fake_mode: FakeTensorMode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The matcher's cost on the device, the Mask2Former loss terms on the (CPU) indices an
    assignment gives, and the order loss term on the head's log-probabilities."""
    from instaformer.modeling.meta_arch import NetworkOutputs
    from instaformer.modeling.order.losses import balanced_softmax_cross_entropy
    from mask2former.modeling import matcher as matcher_module

    _, meta = config_and_model
    model = _on_fake_cuda(meta)
    model.geometric_predictor.dense_feature_attention = True
    x = _fake_cuda_input(fake_mode, _real_input())
    images, sizes, outputs, embed, feats = _network(model, x, training=True)
    targets = model.prepare_targets([x], images)
    assert _assert_cuda(targets, "targets") == 2
    costs = []

    def assign(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        costs.append(cost)  # SciPy's assignment (CPU, data-dependent) replaced by a fixed one
        return torch.arange(cost.shape[1]), torch.arange(cost.shape[1])

    monkeypatch.setattr(matcher_module, "assign", assign)
    criterion = model.criterion
    losses = {}
    for i, layer_outputs in enumerate([outputs, outputs["aux_outputs"][0]]):
        main = {k: v for k, v in layer_outputs.items() if k != "aux_outputs"}
        indices = criterion.matcher(main, targets)
        assert indices[0][0].device.type == "cpu"
        for name in criterion.losses:
            terms = criterion.get_loss(name, main, targets, indices, float(N))
            losses.update({f"{k}_{i}": v for k, v in terms.items()})
    assert len(costs) == 2 and all(c.device == CUDA and c.shape[1] == N + STUFF for c in costs)
    assert {"loss_ce_0", "loss_mask_0", "loss_dice_0", "loss_ce_1"} <= set(losses)
    assert _assert_cuda(losses, "losses") == len(losses)
    queries = torch.arange(N)
    net = NetworkOutputs(outputs, embed, feats, sizes, (images.shape[-2], images.shape[-1]))
    log_probs = model._image_log_probs(net, 0, queries, x)
    gt_keys = {"occlusion": "occlusion_matrix", "depth": "depth_matrix"}
    for task, counts in model.order_criterion.class_counts.items():
        z = log_probs[task][-1].flatten(0, 1)  # every pair, diagonal included: shapes fixed
        y = x[gt_keys[task]].flatten().long().clamp(min=0)
        loss = balanced_softmax_cross_entropy(z, y, counts)  # counts: a CPU constant
        assert loss.device == CUDA and loss.shape == ()


def test_predictor_tensor_steps(
    config_and_model, fake_mode: FakeTensorMode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Predictor with MODEL.DEVICE cuda: the image goes to CUDA, the network runs there."""
    from instaformer.predictor import Predictor

    config, meta = config_and_model
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = setup_cfg(str(REPO / config), ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cuda"])
    model = _on_fake_cuda(meta)
    # The Predictor moves its model to MODEL.DEVICE; for parameters already there that swaps each
    # with itself, which fake tensors refuse (the mode holds weak references to them).
    monkeypatch.setattr(model, "to", lambda device: model)
    predictor = Predictor(cfg, model=model)
    assert predictor.device.type == "cuda"
    image = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    x = predictor.preprocess(image)
    assert x["image"].device == CUDA and x["image"].dtype == torch.uint8
    with torch.inference_mode():
        images, _ = predictor.model.preprocess_image([x])
        outputs, embed, feats = predictor.model.run_network(images)
    assert _assert_cuda((images, outputs, embed, feats), "predictor") > 3


class _StandInResizeInputs(ResizeModeInputs):
    """Resize-mode inputs built by the real OpenCV code on stand-in CPU arrays of the inputs'
    shapes (a fake tensor has no values to give OpenCV), then moved to the requested device:
    what the network and the pair gathering see is what they see on a GPU."""

    def __init__(self, image: Tensor, masks: Tensor, size: int, device: torch.device) -> None:
        with unset_fake_temporarily():
            stand_in_image = torch.zeros(tuple(image.shape), dtype=image.dtype)
            stand_in_masks = torch.zeros(tuple(masks.shape), dtype=masks.dtype)
            super().__init__(stand_in_image, stand_in_masks, size)
        self.rgb = self.rgb.to(device)
        self.masks = self.masks.to(device)


def test_instaordernet_batched_forward(
    instaordernet: nn.Module, fake_mode: FakeTensorMode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All ordered pairs of 12 instances (132 inputs, three forward passes of at most 64).

    The inputs are made on the CPU by OpenCV (the original's values, by design) and handed to
    the device once per image; from there on everything must stay on CUDA."""
    k = 12
    monkeypatch.setattr(instaordernet_meta_arch, "ResizeModeInputs", _StandInResizeInputs)
    model = _on_fake_cuda(instaordernet).eval()
    assert model.pairs_per_forward < k * (k - 1)
    image = torch.empty(3, HEIGHT, WIDTH, dtype=torch.uint8, device="cuda")
    masks = torch.empty(k, HEIGHT, WIDTH, dtype=torch.bool, device="cuda")
    x = {"image": image, "instances": Instances((HEIGHT, WIDTH), gt_masks=masks)}
    (out,) = model([x])
    assert set(out) == {"occlusion", "occlusion_prob", "depth", "depth_prob"}
    assert out["depth_prob"].shape == (k, k, 3) and out["occlusion"].shape == (k, k)
    assert _assert_cuda(out, "InstaOrderNet") == 4
    model.train()
    size = model.input_size
    logits = model.net(torch.empty(2, 5, size, size, device="cuda"))
    assert _assert_cuda(logits, "InstaOrderNet training") == len(model.tasks)


def test_a_tensor_created_on_the_cpu_fails(config_and_model, fake_mode: FakeTensorMode) -> None:
    """The harness catches the mistake it is for: a forward that creates a tensor without
    ``device=`` (so on the CPU) and adds it to CUDA features raises."""
    _, meta = config_and_model
    model = _on_fake_cuda(meta)
    x = _fake_cuda_input(fake_mode, _real_input())

    def wrong(module: nn.Module, inputs: tuple, features: dict) -> dict:
        return {k: v + torch.zeros(v.shape[1:]) for k, v in features.items()}

    model.backbone.register_forward_hook(wrong)
    with pytest.raises(RuntimeError, match="two devices, cuda:0 and cpu"):
        _network(model, x, training=False)
