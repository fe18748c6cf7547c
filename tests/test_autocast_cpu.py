"""Mixed precision on the CPU: the dtype path AMP takes on a GPU, checked in CI.

Under ``torch.autocast("cpu", dtype=torch.bfloat16)`` matrix products and convolutions run in
bfloat16 and their outputs stay bfloat16, as under CUDA autocast. Here:

* ``train_net`` with the project's AMP switch (``SOLVER.AMP.ENABLED True``,
  ``SOLVER.AMP.PRECISION bfloat16``, ``MODEL.DEVICE cpu``): a few steps of the tiny od config on
  the synthetic twin. Autocast is on (the decoder's predictions reach the losses in bfloat16),
  the losses are finite, and the matcher and the losses get float32: the matching cost (SciPy's
  assignment needs it), the mask losses' sampled logits and targets, the order losses'
  log-probabilities, and every loss term;
* ``--eval-only`` of the trained weights under the same autocast: every tensor the evaluators
  receive (scores, masks, probabilities) is float32 or an integer type, and the metrics come out.
"""

from __future__ import annotations

import collections
import json
import math
from pathlib import Path

import pytest
import torch

import instaformer.modeling.matching as full_matching
import instaformer.modeling.order.losses as order_losses
import mask2former.modeling.criterion as criterion
import mask2former.modeling.matcher as matcher
from instaformer.train import load_config, main
from mask2former.engine import default_argument_parser
from mask2former.evaluation.evaluator import DatasetEvaluators

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "synthetic" / "instaformer_od_tiny.yaml")
ITERATIONS = 3


@pytest.fixture(autouse=True)
def _datasets(synthetic_datasets, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(synthetic_datasets))


def _run(output_dir: Path, *opts: str, eval_only: bool = False) -> dict:
    argv = ["--config-file", CONFIG] + (["--eval-only"] if eval_only else [])
    argv += ["OUTPUT_DIR", str(output_dir), "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0"]
    args = default_argument_parser().parse_args([*argv, *opts])
    return main(load_config(args), args)


def _record_dtypes(monkeypatch: pytest.MonkeyPatch) -> dict[str, set]:
    """Wrap the matcher, the loss terms and the evaluators to record the dtypes they get."""
    seen: dict[str, set] = collections.defaultdict(set)
    assign = matcher.assign

    def recording_assign(cost: torch.Tensor):
        seen["matching cost"].add(cost.dtype)
        return assign(cost)

    monkeypatch.setattr(matcher, "assign", recording_assign)
    monkeypatch.setattr(full_matching, "assign", recording_assign)
    get_loss = criterion.SetCriterion.get_loss

    def recording_get_loss(self, loss, outputs, targets, indices, num_masks):
        seen["predictions"].update({outputs["pred_logits"].dtype, outputs["pred_masks"].dtype})
        terms = get_loss(self, loss, outputs, targets, indices, num_masks)
        seen["losses"].update(v.dtype for v in terms.values())
        return terms

    monkeypatch.setattr(criterion.SetCriterion, "get_loss", recording_get_loss)

    def recording(fn):
        def recording_loss(inputs, targets, num_masks):
            seen["mask loss inputs"].update({inputs.dtype, targets.dtype})
            return fn(inputs, targets, num_masks)

        return recording_loss

    for name in ("sigmoid_ce_loss", "dice_loss"):
        monkeypatch.setattr(criterion, name, recording(getattr(criterion, name)))
    order_loss = order_losses.balanced_softmax_cross_entropy

    def recording_order_loss(log_probs, targets, class_counts=None):
        seen["order log-probabilities"].add(log_probs.dtype)
        loss = order_loss(log_probs, targets, class_counts)
        seen["losses"].add(loss.dtype)
        return loss

    monkeypatch.setattr(order_losses, "balanced_softmax_cross_entropy", recording_order_loss)
    process = DatasetEvaluators.process

    def recording_process(self, inputs, outputs):
        for output in outputs:
            for key, value in output.items():
                tensors = [value] if isinstance(value, torch.Tensor) else []
                if key == "panoptic_seg":
                    tensors = [value[0]]
                elif key == "instances":
                    tensors = [value.get(f) for f in value.get_fields()]
                seen["evaluator inputs"].update(t.dtype for t in tensors)
        return process(self, inputs, outputs)

    monkeypatch.setattr(DatasetEvaluators, "process", recording_process)
    return seen


def test_bfloat16_autocast_training_and_evaluation(tmp_path, monkeypatch) -> None:
    seen = _record_dtypes(monkeypatch)
    train_dir = tmp_path / "train"
    _run(
        train_dir,
        "SOLVER.AMP.ENABLED", "True",
        "SOLVER.AMP.PRECISION", "bfloat16",
        "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.MAX_ITER", str(ITERATIONS),
        "SOLVER.WARMUP_ITERS", "1",
        "DATASETS.TEST", "()",
    )  # fmt: skip
    records = [json.loads(line) for line in (train_dir / "metrics.json").read_text().splitlines()]
    losses = [r["total_loss"] for r in records if "total_loss" in r]
    assert losses and all(math.isfinite(v) for v in losses), records
    assert records[-1]["iteration"] == ITERATIONS - 1
    assert torch.bfloat16 in seen["predictions"]  # autocast was on
    assert seen["matching cost"] == {torch.float32}
    assert seen["mask loss inputs"] == {torch.float32}
    assert seen["order log-probabilities"] == {torch.float32}
    assert seen["losses"] == {torch.float32}
    assert not seen["evaluator inputs"]  # no evaluation during this run

    seen.clear()
    weights = str(train_dir / "model_final.pth")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        results = _run(tmp_path / "eval", "MODEL.WEIGHTS", weights, eval_only=True)
    allowed = {torch.float32, torch.int64, torch.int32, torch.bool}
    assert seen["evaluator inputs"] and seen["evaluator inputs"] <= allowed, seen
    assert seen["matching cost"] == {torch.float32}  # ground-truth order rows
    assert {"panoptic_seg", "sem_seg", "occlusion_order", "depth_order"} <= set(results)
    assert math.isfinite(results["sem_seg"]["mIoU"])
    assert math.isfinite(results["occlusion_order"]["f1"])
