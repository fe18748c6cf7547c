"""The training-step benchmark: variants side by side, and the profile of one step."""

from __future__ import annotations

import pytest

from tests.support.scripts import load_script


@pytest.mark.slow
def test_training_benchmark_compares_variants_and_splits_a_step(capsys):
    benchmark = load_script("tools/benchmark.py")
    argv = ["training", "--iters", "2", "--warmup", "0", "--num-images", "4"]
    argv += ["--image-size", "64", "--profile", "--top-ops", "3"]
    batch = ["SOLVER.IMS_PER_BATCH", "2"]
    argv += ["--variant", "base", *batch, "--variant", "points", *batch]
    argv += ["MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "64"]
    benchmark.main(argv)
    printed = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in printed.splitlines() if line.strip()}
    assert rows["base"][3] == "1.00" and float(rows["points"][1]) > 0
    assert "InstaFormer (batch 2, 1024 points, 4 decoder layers)" in printed
    for part in ("backward", "optimizer", "matcher", "backbone", "order", "rest"):
        assert part in rows, part
    assert "operators by self CPU time" in printed and "Self CPU time total" in printed


def test_training_benchmark_refuses_odd_overrides_and_duplicate_names():
    benchmark = load_script("tools/benchmark.py")
    with pytest.raises(SystemExit, match="names must differ"):
        benchmark.main(["training", "--variant", "a", "--variant", "a"])
    with pytest.raises(SystemExit, match="'b': overrides come in KEY VALUE pairs"):
        benchmark.main(["training", "--variant", "b", "SOLVER.MAX_ITER"])
