"""Config files and values that used to fail late or silently: each is refused naming the cause."""

from __future__ import annotations

from pathlib import Path

import pytest

from instaformer.config import ConfigError, setup_cfg
from mask2former.config import check_training_cfg
from tests.support import REPO


def _write(path: Path, text: str | bytes) -> str:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


def test_duplicate_key_names_file_key_and_lines(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "dup.yaml", "SOLVER:\n  BASE_LR: 0.1\nMODEL:\n  DEVICE: cpu\nSOLVER:\n")
    with pytest.raises(ConfigError, match=r"key 'SOLVER' is given twice .*dup\.yaml.*1 and 5"):
        setup_cfg(cfg)
    nested = _write(tmp_path / "nested.yaml", "SOLVER:\n  BASE_LR: 0.1\n  BASE_LR: 0.2\n")
    with pytest.raises(ConfigError, match="'BASE_LR' is given twice"):
        setup_cfg(nested)


def test_circular_base_names_the_cycle(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")
    _write(tmp_path / "b.yaml", "_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match=r"circular _BASE_.*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        setup_cfg(str(tmp_path / "a.yaml"))
    _write(tmp_path / "self.yaml", "_BASE_: self.yaml\n")
    with pytest.raises(ConfigError, match="circular _BASE_"):
        setup_cfg(str(tmp_path / "self.yaml"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("# only a comment\n", "is empty"),
        ("- SOLVER\n- MODEL\n", "holds a list, not a mapping"),
        ("SOLVER: [unclosed\n", "is not valid yaml"),
        (b"SOLVER:\n  BASE_LR: 0.1 \xff\xfe\n", "is not UTF-8"),
        ("_BASE_: 3\n", "_BASE_ in config file .* must be a file path"),
    ],
)
def test_bad_file_is_named(tmp_path: Path, content: str | bytes, message: str) -> None:
    path = _write(tmp_path / "bad.yaml", content)
    with pytest.raises(ConfigError, match=message) as info:
        setup_cfg(path)
    assert "bad.yaml" in str(info.value)


def test_base_that_is_not_a_config(tmp_path: Path) -> None:
    _write(tmp_path / "weights.pth", b"PK\x03\x04\x00\xff\x00binary")
    _write(tmp_path / "list.yaml", "- 1\n- 2\n")
    for base in ("weights.pth", "list.yaml"):
        child = _write(tmp_path / "child.yaml", f"_BASE_: {base}\n")
        with pytest.raises(ConfigError, match=rf"{base}.*named by _BASE_ in .*child\.yaml"):
            setup_cfg(child)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SOLVER.MAX_ITER", "0"),
        ("SOLVER.MAX_ITER", "-5"),
        ("SOLVER.CHECKPOINT_PERIOD", "0"),
        ("SOLVER.CHECKPOINT_PERIOD", "-1"),
        ("SOLVER.IMS_PER_BATCH", "0"),
        ("SOLVER.BASE_LR", "-0.1"),
        ("TEST.EVAL_PERIOD", "-1"),
    ],
)
def test_out_of_range_training_values_name_the_key(key: str, value: str) -> None:
    cfg = setup_cfg("", [key, value])
    with pytest.raises(ConfigError, match=rf"config key {key} must be .* got"):
        check_training_cfg(cfg)


def test_defaults_and_every_released_config_pass_the_training_check() -> None:
    check_training_cfg(setup_cfg(""))
    configs = sorted((REPO / "configs").rglob("*.yaml"))
    assert len(configs) > 40
    for path in configs:
        check_training_cfg(setup_cfg(str(path)))
