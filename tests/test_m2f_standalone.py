"""The layers of the code: ``mask2former`` stands alone, the apps sit on top, no import cycle.

The package below InstaFormer reads only its own keys and never imports ``instaformer``. A
subprocess (so no test of this session has imported ``instaformer`` into it) builds a tiny
ResNet Mask2Former from ``get_base_cfg()`` + ``add_maskformer2_config()``, takes one training
step and runs panoptic inference; another builds the same model as this process, which imported
``instaformer`` (same state dict: importing it registers nothing that Mask2Former reads); a
source scan finds no InstaFormer key or import in ``mask2former/``. Inside ``instaformer``, no
module below the apps (``instaformer/apps/``) imports the predictor or the apps, and no two
modules of either package import each other, directly or through others (lazy imports inside
functions count).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import instaformer.modeling  # noqa: F401  (InstaFormer's modules and registrations, imported)
from instaformer.config import get_cfg
from mask2former.config import CfgNode, add_maskformer2_config, get_base_cfg

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mask2former"
# The trainer's Weights & Biases logging (WANDB.*) is read there until it moves up.
ALLOWED = {"WANDB": {"engine/trainer.py"}}

# A tiny plain Mask2Former, built with seed 0 from Mask2Former's config alone: ``tiny_maskformer``
# (``extra`` are more overrides).
BUILD = r"""
import torch
from mask2former.config import get_base_cfg, add_maskformer2_config
from mask2former.modeling.registry import META_ARCH_REGISTRY
import mask2former.modeling  # registers the modules

def tiny_maskformer(extra=()):
    cfg = get_base_cfg()
    add_maskformer2_config(cfg)
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu",
        "MODEL.RESNETS.STEM_OUT_CHANNELS", "8", "MODEL.RESNETS.RES2_OUT_CHANNELS", "16",
        "MODEL.RESNETS.WIDTH_PER_GROUP", "4", "MODEL.RESNETS.OUT_FEATURES",
        "['res2', 'res3', 'res4', 'res5']",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "4", "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
        "MODEL.SEM_SEG_HEAD.MASK_DIM", "32", "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1",
        "MODEL.MASK_FORMER.HIDDEN_DIM", "32", "MODEL.MASK_FORMER.DIM_FEEDFORWARD", "64",
        "MODEL.MASK_FORMER.DEC_LAYERS", "3", "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "6",
        "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "64",
        "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "True",
        *extra,
    ])
    torch.manual_seed(0)
    return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
"""

STANDALONE = r"""
import json, math, sys
import torch
from mask2former.modeling.adapters import ADAPTER_TYPES
from mask2former.structures import Instances

model = tiny_maskformer()
h, w = 48, 64
masks = torch.zeros((2, h, w), dtype=torch.bool)
masks[0, :24, :32] = True
masks[1, 20:, 30:] = True
inst = Instances((h, w), gt_classes=torch.tensor([0, 3]), gt_masks=masks)
image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
model.train()
losses = model([{"image": image, "height": h, "width": w, "instances": inst}])
total = sum(losses.values())
total.backward()
torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01).step()
model.eval()
with torch.no_grad():
    (result,) = model([{"image": image, "height": 24, "width": 32}])
seg, segments_info = result["panoptic_seg"]
print(json.dumps({
    "class": type(model).__name__,
    "adapters": sum(isinstance(m, ADAPTER_TYPES) for m in model.modules()),
    "losses": sorted(losses),
    "finite": all(math.isfinite(v.item()) for v in losses.values()),
    "grads": sum(p.grad is not None for p in model.parameters()),
    "panoptic_shape": list(seg.shape),
    "panoptic_dtype": str(seg.dtype),
    "segment_ids_ok": {s["id"] for s in segments_info} <= set(seg.unique().tolist()),
    "instaformer_imported": any(m.split(".")[0] == "instaformer" for m in sys.modules),
}))
"""


def _run_without_instaformer(script: str, *args: str) -> str:
    """Run ``BUILD + script`` with ``args`` in a fresh interpreter; its standard output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", BUILD + script, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_plain_mask2former_trains_and_infers_without_instaformer() -> None:
    out = json.loads(_run_without_instaformer(STANDALONE).strip().splitlines()[-1])
    assert out["instaformer_imported"] is False
    assert out["class"] == "MaskFormer"
    assert out["adapters"] == 0  # plain Mask2Former: no InstaFormer adapters
    assert out["finite"] and out["grads"] > 0
    # main + 2 auxiliary predictions, each with class, mask and dice losses
    assert out["losses"] == sorted(
        f"loss_{k}{s}" for k in ("ce", "mask", "dice") for s in ("", "_0", "_1")
    )
    assert out["panoptic_shape"] == [24, 32] and out["panoptic_dtype"] == "torch.int32"
    assert out["segment_ids_ok"]


# Saves the state dict of ``tiny_maskformer(sys.argv[2:])`` to sys.argv[1]; fails if anything
# imported ``instaformer``.
SAVE_STATE = r"""
import sys
model = tiny_maskformer(sys.argv[2:])
assert not any(m.split(".")[0] == "instaformer" for m in sys.modules), "instaformer imported"
torch.save(model.state_dict(), sys.argv[1])
"""


@pytest.mark.parametrize(
    "extra", [(), ("MODEL.MASK_FORMER.USE_ADAPTERS", "True")], ids=["plain", "adapters"]
)
def test_importing_instaformer_does_not_change_a_mask2former_model(
    tmp_path: Path, extra: tuple[str, ...]
) -> None:
    """The same Mask2Former config builds the same model (state-dict names, shapes and values
    for one seed) in a process without ``instaformer`` and in this one, which imported it."""
    path = tmp_path / "state.pth"
    _run_without_instaformer(SAVE_STATE, str(path), *extra)
    assert "instaformer" in sys.modules and "instaformer.modeling" in sys.modules
    namespace: dict = {}
    exec(BUILD, namespace)
    ours = namespace["tiny_maskformer"](extra).state_dict()
    theirs = torch.load(path, weights_only=True)
    assert list(ours) == list(theirs)
    adapters = [k for k in ours if "adapter." in k or "adapter_layers" in k]
    assert bool(adapters) == bool(extra)
    for key, value in ours.items():
        assert value.shape == theirs[key].shape and torch.equal(value, theirs[key]), key


def _keys(node: CfgNode, prefix: str = "") -> set[str]:
    keys = set()
    for name, value in node.items():
        keys.add(prefix + name)
        if isinstance(value, CfgNode):
            keys |= _keys(value, f"{prefix}{name}.")
    return keys


def _instaformer_key_names() -> set[str]:
    """Last name of every key InstaFormer adds (a new node's name stands for its sub-keys)."""
    plain = get_base_cfg()
    add_maskformer2_config(plain)
    own = _keys(plain)
    added = _keys(get_cfg()) - own
    return {k.rsplit(".", 1)[-1] for k in added if k.rpartition(".")[0] not in added}


def test_instaformer_key_names_are_found() -> None:
    names = _instaformer_key_names()
    assert {"GEOMETRIC_PREDICTOR", "REMOVE_LOSSES", "FREEZE", "WANDB"} <= names
    assert "ADAPTER_DIM" not in names  # inside GEOMETRIC_PREDICTOR
    assert not names & {k.rsplit(".", 1)[-1] for k in _keys(get_base_cfg())}


def test_mask2former_sources_name_no_instaformer_key_or_import() -> None:
    names = _instaformer_key_names()
    key_pattern = re.compile(r"\b(" + "|".join(sorted(names)) + r")\b")
    import_pattern = re.compile(r"^\s*(import|from)\s+instaformer\b", re.MULTILINE)
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        text = path.read_text(encoding="utf-8")
        for match in key_pattern.finditer(text):
            if rel not in ALLOWED.get(match.group(1), ()):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"mask2former/{rel}:{line}: {match.group(1)}")
        for match in import_pattern.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"mask2former/{rel}:{line}: imports instaformer")
    assert not found, "mask2former reads InstaFormer's keys or imports it:\n" + "\n".join(found)


# Modules that sit above the model, data and config: the apps and the predictor they drive.
TOP = ("instaformer.apps", "instaformer.predictor")
# ``instaformer.Predictor``: the package's lazy attribute for the public entry point.
TOP_ALLOWED = {"instaformer"}


def _module_names() -> dict[str, Path]:
    names = {}
    for package in ("instaformer", "mask2former"):
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
            names[name.removesuffix(".__init__")] = path
    return names


def _imports(name: str, path: Path, known: dict[str, Path]) -> dict[str, int]:
    """Modules of ``known`` that ``path`` imports, anywhere in the file except under
    ``if TYPE_CHECKING:``, with the first line that does."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        for target in targets:
            if target in known:
                found.setdefault(target, node.lineno)
    return found


def test_nothing_below_the_apps_imports_the_predictor_or_the_apps() -> None:
    known = _module_names()
    found = []
    for name, path in known.items():
        if name.startswith(TOP) or name in TOP_ALLOWED:
            continue
        for target, line in _imports(name, path, known).items():
            if target.startswith(TOP):
                found.append(f"{path.relative_to(ROOT)}:{line}: imports {target}")
    assert not found, "a module below the apps imports the predictor or the apps:\n" + "\n".join(
        found
    )
    # the scan sees the imports it looks for
    apps = _imports("instaformer.apps.demo", known["instaformer.apps.demo"], known)
    assert "instaformer.predictor" in apps and "instaformer.apps.demo_utils" in apps


def test_no_import_cycle() -> None:
    known = _module_names()
    graph = {name: set(_imports(name, path, known)) for name, path in known.items()}
    assert "instaformer.config" in graph["instaformer.model_zoo"]

    def cycle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    return [*trail, start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
        return None

    cycles = [c for c in map(cycle_from, sorted(graph)) if c is not None]
    assert not cycles, "modules that import each other:\n" + "\n".join(
        " -> ".join(c) for c in cycles
    )
