"""Where ONNX Runtime spends its time: a session's profile summed by op type and by model part.

Shape shorthand: none (timings only).

ONNX Runtime writes a Chrome-trace JSON when ``SessionOptions.enable_profiling`` is set; each
executed node has one ``<node name>_kernel_time`` event per run. :func:`summarize_profile` sums
them per op type and per part of the network, the part read from the exporter's name scopes
(``pkg.torch.onnx.name_scopes`` metadata of the ONNX nodes, e.g. ``model.backbone``). Nodes
that ONNX Runtime creates when it fuses or re-lays out the graph keep the name of the node they
replace (``<name>/MatMulAddFusion``, ``<name>_nchwc``) and are attributed through it; fused nodes
named otherwise (``SkipLayerNormalization_token_*``) count as :data:`UNATTRIBUTED`.
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PARTS", "UNATTRIBUTED", "ProfileSummary", "profiled_session", "summarize_profile"]

PARTS = (
    ("backbone", "model.backbone"),
    ("pixel decoder", "model.sem_seg_head.pixel_decoder"),
    ("transformer decoder", "model.sem_seg_head.predictor"),
    ("order head", "head"),
)
"""(part, name scope prefix) of :class:`~instaformer.deploy.export.NetworkWrapper` and
:class:`~instaformer.deploy.export.OrderHeadWrapper` graphs; other nodes count as ``other``."""
UNATTRIBUTED = "fused by ONNX Runtime"
"""Part of the nodes whose name does not lead back to an exported node."""
_SUFFIXES = re.compile(r"(/.*|_nchwc)$")


@dataclass
class ProfileSummary:
    """Kernel time per run (milliseconds) of one profiled session.

    Attributes:
        runs: number of ``model_run`` events summed.
        run_ms: mean wall time of a run.
        by_op: kernel time per op type, largest first.
        by_part: kernel time per part (:data:`PARTS`, ``other``, :data:`UNATTRIBUTED`).
        nodes: executed nodes per op type (per run).
    """

    runs: int
    run_ms: float
    by_op: dict[str, float] = field(default_factory=dict)
    by_part: dict[str, float] = field(default_factory=dict)
    nodes: dict[str, int] = field(default_factory=dict)

    def table(self, top: int = 12) -> str:
        """The summary as text: parts, then the ``top`` op types, with their share of the
        summed kernel time."""
        total = sum(self.by_op.values()) or 1.0
        lines = [f"{self.runs} runs, {self.run_ms:.1f} ms per run"]
        for name, values in (("part", self.by_part), ("op type", self.by_op)):
            for key, ms in list(values.items())[:top]:
                count = f" ({self.nodes[key]} nodes)" if key in self.nodes else ""
                lines.append(f"  {name:8s} {key:30s} {ms:8.1f} ms {100 * ms / total:5.1f} %{count}")
        return "\n".join(lines)


def _part_of_scopes(scopes: list[str]) -> str:
    for part, prefix in PARTS:
        if any(s == prefix or s.startswith(prefix + ".") for s in scopes):
            return part
    return "other"


def node_parts(model_path: str | os.PathLike) -> dict[str, str]:
    """Part (see :data:`PARTS`) of every node of an exported ONNX file, by node name and by
    output name (ONNX Runtime names some nodes it rewrites after their output)."""
    import onnx

    parts = {}
    for node in onnx.load(str(model_path), load_external_data=False).graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
        parts[node.name] = _part_of_scopes(scopes)
        for output in node.output:
            parts.setdefault(output, parts[node.name])
    return parts


def summarize_profile(
    profile_path: str | os.PathLike, model_path: str | os.PathLike
) -> ProfileSummary:
    """Sum an ONNX Runtime profile (``InferenceSession.end_profiling()``'s file) per op type
    and per part of the exported graph ``model_path``; times are per run.

    Raises:
        ValueError: the profile holds no ``model_run`` event (profiling was off, or no run).
    """
    with open(profile_path, encoding="utf-8") as f:
        events: list[dict[str, Any]] = json.load(f)
    runs = [e["dur"] for e in events if e.get("name") == "model_run"]
    if not runs:
        raise ValueError(f"{profile_path}: no model_run event (was the session run?)")
    parts = node_parts(model_path)
    by_op: Counter[str] = Counter()
    by_part: Counter[str] = Counter()
    nodes: Counter[str] = Counter()
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        name = e["name"].removesuffix("_kernel_time")
        op = e.get("args", {}).get("op_name", "?")
        base = _SUFFIXES.sub("", name)
        part = next((parts[n] for n in (name, base, f"node_{base}") if n in parts), UNATTRIBUTED)
        by_op[op] += e["dur"]
        by_part[part] += e["dur"]
        nodes[op] += 1
    n = len(runs)
    return ProfileSummary(
        runs=n,
        run_ms=sum(runs) / n / 1e3,
        by_op={k: v / n / 1e3 for k, v in by_op.most_common()},
        by_part={k: v / n / 1e3 for k, v in by_part.most_common()},
        nodes={k: v // n for k, v in nodes.items()},
    )


def profiled_session(model_path: str | os.PathLike, folder: str | os.PathLike, threads: int) -> Any:
    """An ONNX Runtime CPU session of ``model_path`` with profiling on, its profile written
    into ``folder`` (``InferenceSession.end_profiling()`` returns the file's path); session
    options as :class:`~instaformer.deploy.runtime.OnnxRuntimeModel` uses them."""
    from instaformer.deploy.runtime import cpu_session

    prefix = os.path.join(os.fspath(folder), "onnxruntime_profile")
    return cpu_session(model_path, threads, profile_prefix=prefix)
