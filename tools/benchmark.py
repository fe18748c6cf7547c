"""Benchmarks of the project's hot paths (not timed tests).

Usage::

    python tools/benchmark.py --list
    python tools/benchmark.py model --device cpu --threads 2
    python tools/benchmark.py op --help

Each subcommand lives in ``tools/benchmarks/<name>.py``, which defines
``add_arguments(parser)`` and ``run(args)``. Figures are printed; record the ones you publish in
``docs/benchmarks.md`` together with the device name.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

BENCHMARK_DIR = Path(__file__).resolve().parent / "benchmarks"
REPO = BENCHMARK_DIR.parents[1]


def load_benchmark(name: str) -> ModuleType:
    """``tools/benchmarks/<name>.py`` loaded by path (the folder is not a package)."""
    path = BENCHMARK_DIR / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmarks.{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load benchmark module {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script_json(
    script: str | Path,
    request: dict,
    env: dict[str, str] | None = None,
    code_root: str | Path = REPO,
) -> dict:
    """Run ``python -P script JSON(request)`` in a fresh interpreter from the repository root
    with ``code_root`` first on ``PYTHONPATH`` (the packages it imports: this checkout, or
    another version's ``mask2former`` and ``instaformer`` to compare with) and return the JSON
    object printed on its last stdout line; a failing run raises with the script's stderr. A
    fresh process per measurement gives each its own peak resident memory."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code_root), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        # -P: the script folder (which has modules named like packages) stays off sys.path
        [sys.executable, "-P", str(script), json.dumps(request)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark {Path(script).name} {request} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def extract_revision(revision: str, folder: Path, paths: tuple[str, ...] = ()) -> None:
    """The files of git ``revision`` (only ``paths`` when given) under ``folder``, to run another
    version side by side with this checkout."""
    import tarfile

    archive = folder.with_suffix(".tar")
    with open(archive, "wb") as f:
        proc = subprocess.run(
            ["git", "-C", str(REPO), "archive", revision, *paths], stdout=f, stderr=subprocess.PIPE
        )
    if proc.returncode != 0:
        raise SystemExit(f"git archive {revision} failed: {proc.stderr.decode().strip()}")
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    archive.unlink()


def load_average() -> str:
    """The three load averages, as the published figures state them."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    names = [p.stem for p in sorted(BENCHMARK_DIR.glob("*.py")) if not p.stem.startswith("_")]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    subparsers = parser.add_subparsers(dest="name", metavar="BENCHMARK")
    loaded = {}
    for name in names:
        module = load_benchmark(name)
        loaded[name] = module
        doc = (module.__doc__ or name).strip().split("\n")[0]
        sub = subparsers.add_parser(name, help=doc, description=module.__doc__)
        module.add_arguments(sub)
    args = parser.parse_args(argv)
    if args.list or args.name is None:
        for name, module in loaded.items():
            print(f"{name:12s} {(module.__doc__ or '').strip().splitlines()[0]}")
        return
    loaded[args.name].run(args)


if __name__ == "__main__":
    main()
