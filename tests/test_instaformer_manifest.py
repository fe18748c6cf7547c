"""Every InstaFormer config builds the reference's full state dict (keys, shapes, dtypes, order).

Models are built on the ``meta`` device (no memory, no initialisation cost), so all configs under
``configs/instaorder`` with a manifest run in seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from instaformer.config import get_cfg
from instaformer.modeling import META_ARCH_ALIASES, InstaFormer
from mask2former.modeling.meta_arch import MaskFormer
from mask2former.modeling.registry import META_ARCH_REGISTRY

ROOT = Path(__file__).resolve().parents[1]
# timm/ folders hold the project's own timm-backbone examples, with no reference counterpart
# (tests/test_timm_backbone.py builds them).
CONFIGS = sorted(
    c for c in (ROOT / "configs" / "instaorder").rglob("*.yaml") if "timm" not in c.parent.parts
)
# A Faster R-CNN base file in the reference (no META_ARCHITECTURE), see the manifests README.
NOT_INSTAFORMER = "Base-COCO-PanopticSegmentation.yaml"


def _manifest(reference_dir: Path, config: Path) -> list[tuple[str, tuple[int, ...], str]]:
    name = config.relative_to(ROOT).as_posix().replace("/", "__")[: -len(".yaml")] + ".tsv"
    rows = []
    for line in (reference_dir / "manifests" / name).read_text().splitlines()[1:]:
        key, shape, dtype = line.split("\t")
        dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
        rows.append((key, dims, dtype))
    return rows


def _meta_model(config: Path, opts: list[str] = ()) -> InstaFormer:
    cfg = get_cfg()
    cfg.merge_from_file(str(config))
    cfg.merge_from_list(list(opts))
    name = cfg.MODEL.META_ARCHITECTURE
    with torch.device("meta"):
        return META_ARCH_REGISTRY.get(META_ARCH_ALIASES.get(name, name))(cfg)


def _state(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...], str]]:
    return [
        (k, tuple(v.shape), str(v.dtype).replace("torch.", ""))
        for k, v in model.state_dict().items()
    ]


@pytest.mark.parametrize(
    "config",
    [c for c in CONFIGS if c.name != NOT_INSTAFORMER],
    ids=lambda c: c.relative_to(ROOT / "configs" / "instaorder").as_posix(),
)
def test_full_state_dict_matches_manifest(reference_dir: Path, config: Path) -> None:
    model = _meta_model(config)
    assert type(model) is InstaFormer
    expected = _manifest(reference_dir, config)
    ours = _state(model)
    missing = sorted({k for k, *_ in expected} - {k for k, *_ in ours})
    unexpected = sorted({k for k, *_ in ours} - {k for k, *_ in expected})
    assert not missing and not unexpected, f"missing {missing[:5]}, unexpected {unexpected[:5]}"
    wrong = [(a, b) for a, b in zip(ours, expected, strict=True) if a != b]
    assert not wrong, f"first (ours, reference) differences: {wrong[:5]}"
    has_head = any(k.startswith("geometric_predictor.") for k, *_ in expected)
    assert (model.geometric_predictor is not None) == has_head


def test_no_order_head_is_plain_maskformer() -> None:
    config = (
        ROOT / "configs" / "instaorder" / "occlusion_depth" / "all" / "occlusion_depth_config.yaml"
    )
    model = _meta_model(config, ["MODEL.GEOMETRIC_PREDICTOR.NAME", ""])
    cfg = get_cfg()
    cfg.merge_from_file(str(config))
    cfg.MODEL.GEOMETRIC_PREDICTOR.NAME = ""
    with torch.device("meta"):
        plain = MaskFormer(cfg)
    assert model.geometric_predictor is None and model.order_criterion is None
    assert _state(model) == _state(plain)
    assert model.output_tasks == ()
