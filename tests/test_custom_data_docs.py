"""docs/custom_data.md is true: its worked example gives the matrices it shows, and its commands
run, in order, from a folder that sees the repository's tools/, configs/ and train_net.py.

The commands run as written except for sizes: the example has 6 training and 3 validation
images instead of 40 and 10, and training runs 3 iterations of 2 images (``SOLVER.MAX_ITER 3
SOLVER.IMS_PER_BATCH 2 DATALOADER.NUM_WORKERS 0`` appended) instead of 300 of 8.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from instaformer.data.convert import convert_to_instaorder_panoptic
from instaformer.data.custom import register_panoptic_order_dataset
from instaformer.data.mapper import InstaOrderPanopticMapper
from mask2former.data.catalog import DatasetCatalog

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "custom_data.md").read_text()
SMALLER = {"--num-train 40 --num-val 10": "--num-train 6 --num-val 3"}
TRAIN = "python train_net.py --config-file configs/custom/shapes_tiny.yaml"
FEWER_ITERATIONS = " SOLVER.MAX_ITER 3 SOLVER.IMS_PER_BATCH 2 DATALOADER.NUM_WORKERS 0"


def _block(marker: str, language: str) -> str:
    match = re.search(rf"<!-- {marker} -->\n```{language}\n(.*?)\n```", DOC, re.S)
    assert match, f"no {language} block after <!-- {marker} --> in docs/custom_data.md"
    return match.group(1)


def test_worked_example_gives_the_matrices_shown(tmp_path):
    source = json.loads(_block("worked-example", "json"))
    (tmp_path / "kitchen").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(tmp_path / "kitchen" / "0001.jpg")
    ids = np.ones((48, 64), np.uint8)  # 1: table
    ids[10:30, 5:15], ids[20:40, 12:40], ids[25:45, 38:50], ids[5:15, 52:60] = 2, 3, 4, 5
    Image.fromarray(ids).save(tmp_path / "masks" / "0001.png")
    (tmp_path / "split.json").write_text(json.dumps(source))
    convert_to_instaorder_panoptic(
        str(tmp_path / "split.json"),
        image_root=str(tmp_path),
        out_json=str(tmp_path / "out.json"),
        out_panoptic=str(tmp_path / "panoptic"),
    )
    register_panoptic_order_dataset(
        "docs_worked_example",
        image_root=str(tmp_path),
        panoptic_root=str(tmp_path / "panoptic"),
        json_file=str(tmp_path / "out.json"),
        replace=True,
    )
    out = InstaOrderPanopticMapper(is_train=False, task="od")(
        DatasetCatalog.get("docs_worked_example")[0]
    )
    assert out["tgt_pan_idx"].tolist() == [1, 2, 3]
    expected = {}
    for line in _block("worked-example-matrices", "python").splitlines():
        name, value = line.split(" = ")
        expected[name] = ast.literal_eval(value)
    assert sorted(expected) == ["count", "depth", "occlusion", "overlap"]
    for name, matrix in expected.items():
        assert out[f"{name}_matrix"].tolist() == matrix, name


def _commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)\n```", DOC, re.S)
    commands = []
    for block in blocks:
        for before, after in SMALLER.items():
            block = block.replace(before, after)
        if block.startswith(TRAIN) and "--eval-only" not in block:
            block += FEWER_ITERATIONS
        commands.append(block)
    return commands


def test_docs_commands_run_from_images_to_evaluation_numbers(tmp_path):
    commands = _commands()
    assert len(commands) == 5
    assert sum(c.endswith(FEWER_ITERATIONS) for c in commands) == 1
    for name in ("tools", "configs", "train_net.py"):
        (tmp_path / name).symlink_to(REPO / name)
    env = {k: v for k, v in os.environ.items() if k != "DETECTRON2_DATASETS"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    outputs = []
    for command in commands:
        run = subprocess.run(
            ["bash", "-e", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, f"{command}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
        outputs.append(run.stdout)
    assert "shapes_train: OK" in outputs[2] and "shapes_val: OK" in outputs[2]
    pictures = sorted(
        p.name for p in (tmp_path / "output" / "shapes_check" / "shapes_val").glob("*.png")
    )
    assert len(pictures) == 9 and pictures[0].endswith("_depth.png")
    results = json.loads((tmp_path / "output" / "shapes_tiny" / "eval_results.json").read_text())
    assert {"PQ", "PQ_th", "PQ_st"} <= set(results["panoptic_seg"])
    assert "AP" in results["segm"] and "mIoU" in results["sem_seg"]
    assert {"precision", "recall", "f1"} <= set(results["occlusion_order"])
    assert "ovlOX/WHDR_all" in results["depth_order"]
    assert results["occlusion_order"]["num_images"] == 3
