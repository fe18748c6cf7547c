"""tools/export_model.py: exported programs match the eager model on a tiny config."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from test_demo_predictor import tiny_cfg

from instaformer.modeling import build_model
from instaformer.modeling.order.geometric_transformer import GeometricTransformer

REPO = Path(__file__).resolve().parents[1]


def _export_module():
    spec = importlib.util.spec_from_file_location(
        "export_model", REPO / "tools" / "export_model.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_network_export_matches_eager(tmp_path):
    export = _export_module()
    model = build_model(tiny_cfg()).eval()
    program = export.export_network(model, 64, 96)
    image = torch.rand(1, 3, 64, 96) * 255
    with torch.no_grad():
        eager = export.NetworkWrapper(model)(image)
    exported = program.module()(image)
    assert [tuple(t.shape) for t in exported] == [tuple(t.shape) for t in eager]
    assert export.max_abs_diff(eager, exported) < 1e-4
    path = tmp_path / "network.pt2"
    torch.export.save(program, str(path))
    reloaded = torch.export.load(str(path)).module()(image)
    assert export.max_abs_diff(eager, reloaded) < 1e-4


def test_order_head_export_matches_eager_for_any_instance_count():
    export = _export_module()
    head = GeometricTransformer(
        tasks=("occlusion", "depth"), mask_dim=32, d_model=32, num_heads=2, num_layers=2
    ).eval()
    program = export.export_order_head(head, 32, (16, 24), max_instances=16)
    assert head.dense_feature_attention is False  # restored after the export
    wrapper = export.OrderHeadWrapper(head)
    features = torch.randn(32, 16, 24)
    for n in (2, 5, 9):
        embed = torch.randn(n, 32)
        masks = (torch.rand(n, 16, 24) > 0.6).float()
        with torch.no_grad():
            eager = wrapper(embed, masks, features)  # sparse feature attention
        exported = program.module()(embed, masks, features)
        assert [tuple(t.shape) for t in exported] == [(n, n, 2), (n, n, 3)]
        assert export.max_abs_diff(eager, exported) < 1e-4
