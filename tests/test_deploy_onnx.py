"""ONNX export (tools/export_model.py --onnx) and the onnxruntime backend, on the tiny od model.

Needs the ``[export]`` extra (onnx, onnxscript, onnxruntime); skipped with a reason without it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scripts import load_script
from test_demo_predictor import LOW_THRESHOLDS, OD_CONFIG, make_scene, tiny_cfg

from instaformer.config import setup_cfg
from instaformer.deploy import export as deploy
from instaformer.deploy import runtime
from instaformer.deploy.export import NetworkWrapper, pad_like_model
from instaformer.predictor import Predictor
from mask2former.utils import download
from mask2former.utils.outputs import RECORD_NAME

onnx = pytest.importorskip("onnx", reason="the [export] extra is not installed")
pytest.importorskip("onnxruntime", reason="the [export] extra is not installed")
pytest.importorskip("onnxscript", reason="the [export] extra is not installed")

HEIGHT, WIDTH = 64, 96  # multiples of SIZE_DIVISIBILITY (32)
MAX_INSTANCES = 64
TOLERANCE = 1e-4


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.names: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.names.append(record.name)


def _tool():
    return load_script("tools/export_model.py")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A random-init tiny od model, its weights file, the tool's --onnx output directory, and
    the names of the loggers and the stdout the tool produced."""
    torch.manual_seed(0)
    model = Predictor(tiny_cfg()).model
    root = tmp_path_factory.mktemp("onnx")
    weights = root / "model.pth"
    torch.save({"model": model.state_dict()}, weights)
    out = root / "graphs"
    argv = ["--config-file", str(OD_CONFIG), "--output", str(out), "--onnx"]
    argv += ["--height", str(HEIGHT), "--width", str(WIDTH), "--max-instances", str(MAX_INSTANCES)]
    argv += [*LOW_THRESHOLDS, "MODEL.WEIGHTS", str(weights)]
    records, stdout = _Records(), io.StringIO()
    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.setLevel(logging.INFO)  # as the tool's logging.basicConfig sets it
    root_logger.addHandler(records)
    try:
        with contextlib.redirect_stdout(stdout):
            assert _tool().main(argv) == 0
    finally:
        root_logger.removeHandler(records)
        root_logger.setLevel(level)
    return model, weights, out, records.names, stdout.getvalue()


def _session(path: Path):
    # one thread: no spinning worker threads on a shared test machine
    return runtime.cpu_session(path, threads=1)


def _dims(values) -> dict[str, list]:
    return {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values
    }


def test_graphs_pass_the_checker_without_loops_and_name_the_instance_count(exported):
    _, _, out, _, _ = exported
    assert sorted(p.name for p in out.iterdir()) == [
        RECORD_NAME,  # the export's record of what it wrote
        "network.onnx",
        "network.pt2",
        "order_head.onnx",
        "order_head.pt2",
    ]  # fmt: skip  (weights inline: no .onnx.data files)
    for name in ("network.onnx", "order_head.onnx"):
        onnx.checker.check_model(str(out / name), full_check=True)
        ops = deploy.onnx_op_counts(out / name)
        assert not set(ops) & deploy.LOOP_OPS, f"{name}: {ops}"
    assert "GridSample" in deploy.onnx_op_counts(out / "network.onnx")
    head = onnx.load(str(out / "order_head.onnx"))
    c, h, w = 256, HEIGHT // 4, WIDTH // 4
    assert _dims(head.graph.input) == {
        "mask_embed": ["n", c], "masks": ["n", h, w], "mask_features": [c, h, w]
    }  # fmt: skip
    assert _dims(head.graph.output) == {"occlusion": ["n", "n", 2], "depth": ["n", "n", 3]}
    network = onnx.load(str(out / "network.onnx"), load_external_data=False)
    assert [v.name for v in network.graph.output] == list(deploy.NETWORK_OUTPUTS)


def test_exporter_is_quiet(exported):
    """The exporter's loggers stay silent (~300 INFO lines without the silencing)."""
    _, _, _, names, stdout = exported
    assert "instaformer.export" in names  # the tool's own INFO lines were captured
    exporter = ("onnx", "onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._export")
    assert sorted({n for n in names if n.startswith(exporter)}) == []
    assert "[torch.onnx]" not in stdout


def test_network_in_onnxruntime_matches_pytorch(exported):
    model, _, out, _, _ = exported
    session = _session(out / "network.onnx")
    torch.manual_seed(1)
    for image in (
        torch.from_numpy(make_scene(HEIGHT, WIDTH)[0].transpose(2, 0, 1).copy())[None].float(),
        torch.rand(1, 3, HEIGHT, WIDTH) * 255,
    ):
        with torch.no_grad():
            eager = deploy.NetworkWrapper(model)(image)
        result = session.run(None, {"image": image.numpy()})
        assert deploy.max_abs_diff(eager, tuple(result)) < TOLERANCE


def test_order_head_in_onnxruntime_takes_2_to_64_instances(exported):
    model, _, out, _, _ = exported
    session = _session(out / "order_head.onnx")
    eager = deploy.OrderHeadWrapper(model.geometric_predictor)  # sparse feature attention
    c, h, w = 256, HEIGHT // 4, WIDTH // 4
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(c, h, w, generator=generator)
    checked = (2, 3, 7, 16, 33, MAX_INSTANCES)  # values against PyTorch (CPU-bound eager head)
    for n in range(2, MAX_INSTANCES + 1):
        embed = torch.randn(n, c, generator=generator)
        masks = (torch.rand(n, h, w, generator=generator) > 0.6).float()
        feeds = {
            "mask_embed": embed.numpy(),
            "masks": masks.numpy(),
            "mask_features": features.numpy(),
        }
        result = session.run(None, feeds)
        assert [r.shape for r in result] == [(n, n, 2), (n, n, 3)]
        assert all(np.isfinite(r).all() for r in result)
        if n not in checked:
            continue
        with torch.no_grad():
            reference = eager(embed, masks, features)
        assert deploy.max_abs_diff(reference, tuple(result)) < TOLERANCE, n
        for ref, res in zip(reference, result, strict=True):
            assert np.array_equal(ref.argmax(-1).numpy(), res.argmax(-1)), n


@pytest.fixture(scope="module")
def backends(exported):
    """The model, and Predictors on the PyTorch and the onnxruntime backends (MODEL.WEIGHTS
    names the model's weights file; the exported graphs go to the cache folder). The cache is
    seeded with the tool's 64 x 96 network graph (same export function); the backend exports
    the order head on first use."""
    model, weights, out, _, _ = exported
    cfg = setup_cfg(str(OD_CONFIG), [*LOW_THRESHOLDS, "MODEL.WEIGHTS", str(weights)])
    ort_predictor = Predictor(cfg, model=model, backend="onnxruntime")
    network, _ = ort_predictor._forward.paths(HEIGHT, WIDTH)
    network.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "network.onnx", network)
    return model, Predictor(cfg, model=model), ort_predictor


def _near_ties(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """bool[H, W]: pixels whose panoptic label the PyTorch path decides by a margin below 1e-5
    (two kept queries' ``score * sigmoid(mask)`` or the winner's sigmoid against 0.5): there,
    rounding differences of ~1e-7 may pick the other side (random-init masks are smooth)."""
    h, w = image.shape[:2]
    x = pad_like_model(torch.from_numpy(image.transpose(2, 0, 1).copy()), model.pixel_mean, 32)
    with torch.no_grad():
        logits, masks, _, _ = NetworkWrapper(model)(x)
    masks = model.upsample_masks(masks, tuple(x.shape[-2:]))[0, :, :h, :w].sigmoid()
    scores, labels = logits[0].softmax(-1).max(-1)
    keep = labels.ne(model.sem_seg_head.num_classes) & (scores > 0)
    prob = scores[keep, None, None] * masks[keep]
    top = prob.topk(min(2, prob.shape[0]), dim=0).values
    winner = masks[keep].gather(0, prob.argmax(0)[None])[0]
    margin = top[0] - top[1] if top.shape[0] > 1 else torch.ones_like(winner)
    return ((margin < 1e-5) | ((winner - 0.5).abs() < 1e-5)).numpy()


def _summary(segments) -> list[tuple]:
    return [(s.id, s.category_id, s.isthing, s.query_index) for s in segments]


@pytest.mark.parametrize("size", [(HEIGHT, WIDTH), (50, 70), (33, 90)])
def test_onnxruntime_backend_gives_the_pytorch_result(backends, size):
    """Same OrderResult: panoptic map equal (up to near-tie pixels), same segments, same order
    labels, probabilities within 1e-4. The smaller images are padded to 64 x 96."""
    model, torch_predictor, ort_predictor = backends
    image = make_scene(*size)[0]
    expected, result = torch_predictor(image), ort_predictor(image)
    differ = expected.panoptic_seg != result.panoptic_seg
    assert not (differ & ~_near_ties(model, image)).any()
    assert differ.sum() <= 2
    assert _summary(result.segments) == _summary(expected.segments)
    assert _summary(result.stuff_segments) == _summary(expected.stuff_segments)
    assert len(expected.segments) >= 2  # the order head runs
    for task in ("occlusion", "depth"):
        assert np.array_equal(getattr(result, task), getattr(expected, task))
        prob, reference = getattr(result, f"{task}_prob"), getattr(expected, f"{task}_prob")
        assert np.abs(prob - reference).max() < TOLERANCE
    assert result.depth_ranking == expected.depth_ranking


def test_exported_graphs_are_cached_in_the_cache_folder(backends, exported, monkeypatch):
    model, _, ort_predictor = backends
    _, weights, _, _, _ = exported
    image = make_scene(HEIGHT, WIDTH)[0]
    expected = ort_predictor(image)  # the order head is exported by the backend on first use
    network, head = ort_predictor._forward.paths(HEIGHT, WIDTH)
    assert network.parent == download.cache_dir() / "onnx"
    assert sorted(p.name for p in weights.parent.iterdir()) == ["graphs", "model.pth"]
    assert network.is_file() and head.is_file()
    assert not [p for p in network.parent.iterdir() if p.suffix != ".onnx"]  # no temp files

    def no_export(*args, **kwargs):
        raise AssertionError("the cached graph should have been used")

    monkeypatch.setattr(runtime, "onnx_export_network", no_export)
    monkeypatch.setattr(runtime, "onnx_export_order_head", no_export)
    config_text = ort_predictor.cfg.dump()
    again = runtime.OnnxRuntimeModel(model, config_text=config_text)
    assert again.paths(HEIGHT, WIDTH) == (network, head)
    cached = Predictor(ort_predictor.cfg, model=model, backend="onnxruntime")
    assert np.array_equal(cached(image).panoptic_seg, expected.panoptic_seg)

    other_config = runtime.OnnxRuntimeModel(model, config_text=config_text + "#")
    assert other_config.key != again.key
    changed = copy.deepcopy(model)
    with torch.no_grad():
        next(changed.parameters()).add_(1.0)
    other_weights = runtime.OnnxRuntimeModel(changed, config_text=config_text)
    assert other_weights.key not in (again.key, other_config.key)
    assert again.paths(32, 64)[0].name != network.name  # keyed by input size


def test_cache_folder_follows_the_environment(backends, tmp_path, monkeypatch):
    model = backends[0]
    monkeypatch.setenv("INSTAFORMER_CACHE", str(tmp_path))
    runner = runtime.OnnxRuntimeModel(model, config_text="cfg")
    assert runner.paths(HEIGHT, WIDTH)[0].parent == tmp_path / "onnx"
    chosen = runtime.OnnxRuntimeModel(model, config_text="cfg", cache_dir=tmp_path / "mine")
    assert chosen.paths(HEIGHT, WIDTH)[0].parent == tmp_path / "mine"


def test_predictor_rejects_unknown_backends():
    with pytest.raises(ValueError, match="'tensorrt'"):
        Predictor(tiny_cfg(), backend="tensorrt")


def test_demo_runs_on_the_onnxruntime_backend(backends, exported, tmp_path, monkeypatch):
    """``demo --backend onnxruntime`` writes the PyTorch path's orders (graphs from the cache)."""
    from instaformer.apps import demo

    _, torch_predictor, ort_predictor = backends
    _, weights, _, _, _ = exported
    image = make_scene(HEIGHT, WIDTH)[0]
    ort_predictor(image)  # both graphs are now in the cache next to the weights

    def no_export(*args, **kwargs):
        raise AssertionError("the demo should reuse the graphs cached next to the weights")

    monkeypatch.setattr(runtime, "onnx_export_network", no_export)
    monkeypatch.setattr(runtime, "onnx_export_order_head", no_export)
    Image.fromarray(image).save(tmp_path / "scene.png")
    argv = ["--config-file", str(OD_CONFIG), "--input", str(tmp_path / "scene.png")]
    argv += ["--output", str(tmp_path / "out"), "--backend", "onnxruntime"]
    argv += [*LOW_THRESHOLDS, "MODEL.WEIGHTS", str(weights)]
    assert demo.main(argv) == 0
    written = json.loads((tmp_path / "out" / "scene.json").read_text())
    expected = torch_predictor(image).to_dict()
    assert written["occlusion"] == expected["occlusion"] and written["depth"] == expected["depth"]
    assert len(written["segments"]) == len(expected["segments"]) >= 2


def test_profile_summary_attributes_the_network_time_to_its_parts(exported, tmp_path):
    """ONNX Runtime's profile of the network graph, summed per op type and per part."""
    from instaformer.deploy.profile import UNATTRIBUTED, profiled_session, summarize_profile

    _, _, out, _, _ = exported
    session = profiled_session(out / "network.onnx", tmp_path, threads=1)
    image = torch.rand(1, 3, HEIGHT, WIDTH).numpy() * 255
    for _ in range(2):
        session.run(None, {"image": image})
    profile = Path(session.end_profiling())
    assert profile.parent == tmp_path
    summary = summarize_profile(profile, out / "network.onnx")
    assert summary.runs == 2 and summary.run_ms > 0
    assert {"backbone", "pixel decoder", "transformer decoder"} <= set(summary.by_part)
    assert set(summary.by_part) <= {"backbone", "pixel decoder", "transformer decoder", "other",
                                    UNATTRIBUTED}  # fmt: skip
    assert summary.by_part["pixel decoder"] > 0 and summary.nodes["GridSample"] >= 1
    assert sum(summary.by_part.values()) == pytest.approx(sum(summary.by_op.values()))
    assert sum(summary.by_op.values()) <= summary.run_ms
    assert "pixel decoder" in summary.table()
    with pytest.raises(ValueError, match="no model_run"):
        summarize_profile(_empty_profile(tmp_path), out / "network.onnx")


def _empty_profile(folder: Path) -> Path:
    path = folder / "empty.json"
    path.write_text("[]")
    return path
