"""Every released config builds a Mask2Former part with the reference's state-dict names/shapes.

The reference manifests (``tests/data/reference/manifests``) list ``key, shape, dtype`` of the
reference model built from each config file; keys under ``geometric_predictor.`` belong to the
order head and are compared by the order-head tests. Models are built on the ``meta`` device,
so no memory is allocated and all configs run in seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mask2former.modeling  # noqa: F401  (registers the modules)
from instaformer.config import get_cfg
from mask2former.modeling.registry import META_ARCH_REGISTRY

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "tests" / "data" / "reference" / "manifests"
# timm/ folders hold the project's own timm-backbone examples, with no reference counterpart
# (tests/test_timm_backbone.py builds them).
CONFIGS = sorted(
    c for c in (ROOT / "configs" / "instaorder").rglob("*.yaml") if "timm" not in c.parent.parts
)
# The reference builds detectron2's GeneralizedRCNN from this base file (it names no
# META_ARCHITECTURE); it is not a Mask2Former model (see the manifests README).
NOT_MASKFORMER = {"configs/instaorder/Base-COCO-PanopticSegmentation.yaml"}


def _manifest_path(config: Path) -> Path:
    rel = config.relative_to(ROOT).as_posix()
    return MANIFESTS / (rel.replace("/", "__")[: -len(".yaml")] + ".tsv")


def _read_manifest(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    entries = {}
    for line in path.read_text().splitlines()[1:]:
        key, shape, dtype = line.split("\t")
        dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
        entries[key] = (dims, dtype)
    return entries


def _m2f_state(config: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    cfg = get_cfg()
    cfg.merge_from_file(str(config))
    cfg.MODEL.GEOMETRIC_PREDICTOR.NAME = ""  # the order head is compared elsewhere
    cfg.MODEL.META_ARCHITECTURE = "MaskFormer"
    with torch.device("meta"):
        model = META_ARCH_REGISTRY.get("MaskFormer")(cfg)
    return {
        k: (tuple(v.shape), str(v.dtype).replace("torch.", ""))
        for k, v in model.state_dict().items()
    }


def test_every_manifest_has_a_config() -> None:
    assert CONFIGS, "no config files under configs/instaorder"
    manifests = {p.name for p in MANIFESTS.glob("*.tsv")}
    configs = {_manifest_path(c).name for c in CONFIGS}
    assert manifests == configs


@pytest.mark.parametrize(
    "config",
    [c for c in CONFIGS if c.relative_to(ROOT).as_posix() not in NOT_MASKFORMER],
    ids=lambda c: c.relative_to(ROOT / "configs" / "instaorder").as_posix(),
)
def test_mask2former_state_dict_matches_manifest(config: Path) -> None:
    expected = {
        k: v
        for k, v in _read_manifest(_manifest_path(config)).items()
        if not k.startswith("geometric_predictor.")
    }
    ours = _m2f_state(config)
    missing = sorted(set(expected) - set(ours))
    unexpected = sorted(set(ours) - set(expected))
    assert not missing and not unexpected, f"missing {missing[:10]}, unexpected {unexpected[:10]}"
    wrong = {k: (ours[k], expected[k]) for k in expected if ours[k] != expected[k]}
    assert not wrong, f"shape/dtype mismatches (ours, reference): {dict(list(wrong.items())[:10])}"
    # same enumeration order as the reference (checkpoint tools that rely on order keep working)
    assert list(ours) == [k for k in expected if k in ours]
