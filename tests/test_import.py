"""The packages import on a machine without a GPU and without the compiled extension."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import REPO

_SCRIPT = """
import importlib, pkgutil, sys
import mask2former, instaformer
names = []
for package in (mask2former, instaformer):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
        names.append(info.name)
import torch
assert not torch.cuda.is_available()
print(len(names))
"""


@pytest.mark.slow
def test_every_module_imports_without_gpu_or_build():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip().splitlines()[-1]) >= 3
