"""The config system: every file under configs/ loads, and bad files fail naming the culprit."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from instaformer.config import ConfigError, get_cfg, setup_cfg

REPO = Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted((REPO / "configs").rglob("*.yaml"))
REFERENCE_MANIFESTS = REPO / "tests" / "data" / "reference" / "manifests"


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def test_config_tree_matches_the_released_file_names():
    # timm/ folders hold the project's own timm-backbone examples (tests/test_timm_backbone.py)
    ours = {
        _rel(p)
        for p in CONFIG_FILES
        if _rel(p).startswith("configs/instaorder/") and "timm" not in p.parent.parts
    }
    assert len(ours) == 39
    if REFERENCE_MANIFESTS.is_dir():
        released = {
            p.name.replace("__", "/").replace(".tsv", ".yaml")
            for p in REFERENCE_MANIFESTS.glob("*.tsv")
        }
        assert ours == released


@pytest.mark.parametrize("path", CONFIG_FILES, ids=_rel)
def test_every_config_file_loads(path: Path):
    cfg = setup_cfg(str(path))
    assert cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY == 32
    assert not str(cfg.OUTPUT_DIR).startswith("/")


def _family_values(name: str):
    cfg = setup_cfg(str(REPO / "configs" / "instaorder" / name))
    return cfg.MODEL, cfg.TEST, cfg.SOLVER


def test_swin_large_values():
    for variant in ("all", "pairwise"):
        model, _, solver = _family_values(
            f"occlusion_depth/{variant}/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml"
        )
        assert model.SWIN.EMBED_DIM == 192
        assert model.SWIN.WINDOW_SIZE == 12
        assert model.SWIN.PRETRAIN_IMG_SIZE == 384
        assert model.MASK_FORMER.NUM_OBJECT_QUERIES == 200
        assert model.BACKBONE.NAME == "D2SwinTransformer"
        assert solver.MAX_ITER == (737500 if variant == "pairwise" else 120000)


def test_task_families():
    expected = {"occlusion": ("o", True, False), "depth": ("d", False, True)}
    expected["occlusion_depth"] = ("od", True, True)
    for folder, (task, occ, dep) in expected.items():
        model, test, _ = _family_values(f"{folder}/all/swin/maskformer2_swin_tiny_bs16_50ep.yaml")
        gp = model.GEOMETRIC_PREDICTOR
        assert (gp.NAME, gp.TASK) == ("GeometricTransformer", task)
        assert (gp.OCCLUSION_ON, gp.DEPTH_ON) == (occ, dep)
        assert (test.OCCLUSION_EVALUATION, test.DEPTH_EVALUATION) == (occ, dep)
        assert model.SWIN.EMBED_DIM == 96 and model.SWIN.DEPTHS == [2, 2, 6, 2]
        assert model.BACKBONE.FREEZE and model.SEM_SEG_HEAD.FREEZE
        assert model.MASK_FORMER.DEC_LAYERS == 10

        model, _, _ = _family_values(f"{folder}/pairwise/{folder}_config.yaml")
        gp = model.GEOMETRIC_PREDICTOR
        assert (gp.NAME, gp.TASK) == ("PairwiseResNet", task)
        assert gp.INPUT_SIZE == (256 if task == "o" else 384)
        assert model.BACKBONE.NAME == "build_resnet_backbone" and model.RESNETS.DEPTH == 50


def test_base_values():
    model, test, solver = _family_values("maskformer2_R101_bs16_50ep.yaml")
    assert model.RESNETS.DEPTH == 101
    assert model.GEOMETRIC_PREDICTOR.NAME == ""
    assert solver.CLIP_GRADIENTS.CLIP_TYPE == "full_model" and solver.BASE_LR == 1e-4
    assert tuple(solver.STEPS) == (80000, 110000)
    assert test.EVAL_PERIOD == 5000


def test_unknown_key_in_file_names_key_and_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  MASK_FORMER:\n    NUM_QUERIES_TYPO: 3\n")
    with pytest.raises(ConfigError) as info:
        get_cfg().merge_from_file(str(bad))
    message = str(info.value)
    assert "MODEL.MASK_FORMER.NUM_QUERIES_TYPO" in message
    assert str(bad) in message


def test_unknown_key_in_overrides_names_key():
    with pytest.raises(ConfigError, match="SOLVER.BASE_LRR"):
        get_cfg().merge_from_list(["SOLVER.BASE_LRR", "0.1"])
    with pytest.raises(ConfigError, match="pairs"):
        get_cfg().merge_from_list(["SOLVER.BASE_LR"])


def test_missing_base_file_names_it(tmp_path: Path):
    child = tmp_path / "child.yaml"
    child.write_text("_BASE_: does_not_exist.yaml\nSEED: 3\n")
    with pytest.raises(ConfigError) as info:
        get_cfg().merge_from_file(str(child))
    assert "does_not_exist.yaml" in str(info.value)
    assert str(child) in str(info.value)


def test_missing_config_file_is_named(tmp_path: Path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        get_cfg().merge_from_file(str(tmp_path / "nope.yaml"))


def test_wrong_value_type_names_key():
    with pytest.raises(ConfigError, match="NUM_OBJECT_QUERIES"):
        get_cfg().merge_from_list(["MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "'many'"])


def test_integer_override_of_a_float_key_is_accepted():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", "0", "SOLVER.BASE_LR", "1"])
    threshold = cfg.MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD
    assert threshold == 0.0 and type(threshold) is float and type(cfg.SOLVER.BASE_LR) is float
    with pytest.raises(ConfigError, match="MAX_ITER"):  # no float for an int key
        cfg.merge_from_list(["SOLVER.MAX_ITER", "1.5"])


def test_overrides_follow_detectron2_syntax(tmp_path: Path):
    base = tmp_path / "base.yaml"
    base.write_text("SOLVER:\n  BASE_LR: 0.5\n")
    child = tmp_path / "child.yaml"
    child.write_text("_BASE_: base.yaml\nSOLVER:\n  MAX_ITER: 7\n")
    cfg = setup_cfg(str(child), ["SOLVER.STEPS", "(3, 5)", "MODEL.DEVICE", "cpu"])
    assert cfg.SOLVER.BASE_LR == 0.5 and cfg.SOLVER.MAX_ITER == 7
    assert tuple(cfg.SOLVER.STEPS) == (3, 5) and cfg.MODEL.DEVICE == "cpu"


def test_removed_reference_keys(tmp_path: Path):
    released = tmp_path / "released.yaml"
    released.write_text("MODEL:\n  GEOMETRIC_PREDICTOR:\n    POS_ENC: False\n")
    get_cfg().merge_from_file(str(released))
    broken = tmp_path / "broken.yaml"
    broken.write_text("MODEL:\n  GEOMETRIC_PREDICTOR:\n    POS_ENC: True\n")
    with pytest.raises(ConfigError) as info:
        get_cfg().merge_from_file(str(broken))
    assert "MODEL.GEOMETRIC_PREDICTOR.POS_ENC" in str(info.value)
    assert str(broken) in str(info.value)


@pytest.mark.parametrize(
    "key, released, other, does_the_job",
    [
        ("MODEL.GEOMETRIC_PREDICTOR.METHOD", "stack", "cat", "stacks the 2n tokens"),
        ("MODEL.GEOMETRIC_PREDICTOR.FUSE", "False", "True", "TRANSPOSE_QUERIES"),
        ("MODEL.GEOMETRIC_PREDICTOR.MASK_NON_MASK_VALUES", "True", "False", "ATTN_BEFORE_POOL"),
        ("MODEL.MASK_FORMER.ENC_LAYERS", "0", "6", "TRANSFORMER_ENC_LAYERS"),
    ],
)
def test_single_valued_keys_are_retired(key, released, other, does_the_job):
    cfg = get_cfg()
    parent, name = key.rsplit(".", 1)
    cfg.merge_from_list([key, released])  # a file that keeps the released value loads
    for node in (cfg, get_cfg()):  # no such key, and no default for it
        for part in parent.split("."):
            node = node[part]
        assert name not in node
    with pytest.raises(ConfigError) as info:
        get_cfg().merge_from_list([key, other])
    assert key in str(info.value) and does_the_job in str(info.value)


def test_pairwise_key_must_agree_with_the_head_name(tmp_path: Path):
    pairwise = "configs/instaorder/occlusion/pairwise/occlusion_config.yaml"
    holistic = "configs/instaorder/occlusion/all/occlusion_config.yaml"
    assert setup_cfg(pairwise).MODEL.GEOMETRIC_PREDICTOR.NAME == "PairwiseResNet"  # PAIRWISE True
    setup_cfg(holistic, ["MODEL.GEOMETRIC_PREDICTOR.PAIRWISE", "False"])
    for config, value in ((pairwise, "False"), (holistic, "True")):
        with pytest.raises(ConfigError, match="NAME chooses the head") as info:
            setup_cfg(config, ["MODEL.GEOMETRIC_PREDICTOR.PAIRWISE", value])
        assert f"Only {value != 'True'} is accepted" in str(info.value)
    # in a file, PAIRWISE is compared with the NAME the file (or its _BASE_) gives
    child = tmp_path / "child.yaml"
    child.write_text(
        f"_BASE_: {Path(pairwise).resolve()}\nMODEL:\n  GEOMETRIC_PREDICTOR:\n"
        "    NAME: GeometricTransformer\n"
    )
    with pytest.raises(ConfigError, match=str(child)):
        setup_cfg(str(child))


def test_moved_keys_set_their_new_names(tmp_path: Path):
    old = tmp_path / "old.yaml"
    old.write_text(
        "MODEL:\n  GEOMETRIC_PREDICTOR:\n    USE_ADAPTERS: False\n    ADAPTER_DIM: 16\n"
        "    ADAPTER_SCALE: 0.5\nSOLVER:\n  OCCLUSION_ZERO_DIV: 0\n"
    )
    cfg = setup_cfg(str(old))
    mf = cfg.MODEL.MASK_FORMER
    assert (mf.USE_ADAPTERS, mf.ADAPTER_DIM, mf.ADAPTER_SCALE) == (False, 16, 0.5)
    assert cfg.TEST.OCCLUSION_ZERO_DIV == 0 and "OCCLUSION_ZERO_DIV" not in cfg.SOLVER
    assert "ADAPTER_DIM" not in cfg.MODEL.GEOMETRIC_PREDICTOR
    cfg = setup_cfg("", ["MODEL.GEOMETRIC_PREDICTOR.ADAPTER_DIM", "8"])
    assert cfg.MODEL.MASK_FORMER.ADAPTER_DIM == 8
    both = ["SOLVER.OCCLUSION_ZERO_DIV", "0", "TEST.OCCLUSION_ZERO_DIV", "1"]
    with pytest.raises(ConfigError, match="SOLVER.OCCLUSION_ZERO_DIV and TEST.OCCLUSION_ZERO_DIV"):
        setup_cfg("", both)
    # in each file of a _BASE_ chain, so that a file's value wins over its base's
    base = tmp_path / "base.yaml"
    base.write_text("MODEL:\n  MASK_FORMER:\n    ADAPTER_DIM: 32\n")
    child = tmp_path / "child.yaml"
    child.write_text("_BASE_: base.yaml\nMODEL:\n  GEOMETRIC_PREDICTOR:\n    ADAPTER_DIM: 4\n")
    assert setup_cfg(str(child)).MODEL.MASK_FORMER.ADAPTER_DIM == 4
    both_in_file = tmp_path / "both.yaml"
    both_in_file.write_text("SOLVER:\n  OCCLUSION_ZERO_DIV: 0\nTEST:\n  OCCLUSION_ZERO_DIV: 0\n")
    with pytest.raises(ConfigError, match="both set"):
        setup_cfg(str(both_in_file))


def test_legacy_keys_travel_with_the_config():
    """A pickled config (as handed to worker processes) still knows its retired keys."""
    cfg = pickle.loads(pickle.dumps(get_cfg()))
    with pytest.raises(ConfigError, match="PAIRWISE"):
        cfg.merge_from_list(["MODEL.GEOMETRIC_PREDICTOR.PAIRWISE", "True"])
    cfg.merge_from_list(["SOLVER.OCCLUSION_ZERO_DIV", "0"])
    assert cfg.clone().TEST.OCCLUSION_ZERO_DIV == 0


def test_defaults_are_valid():
    cfg = get_cfg()
    text = cfg.dump()
    assert "/home/" not in text
    assert cfg.MODEL.GEOMETRIC_PREDICTOR.INSTAORDERNET_WEIGHTS_PATH == ""
    assert cfg.INPUT.OCC_SAMPLES_PER_CLASS == [2353545, 388323]
    assert get_cfg() is not get_cfg()


def test_config_resolves_by_released_name_and_names_a_missing_one():
    from instaformer.config import resolve_config_file

    name = "instaorder/occlusion_depth/all/swin/maskformer2_swin_tiny_bs16_50ep.yaml"
    found = Path(resolve_config_file(name))
    assert found.is_file() and found.samefile(resolve_config_file("configs/" + name))
    assert setup_cfg(name).MODEL.SWIN.EMBED_DIM == 96
    with pytest.raises(ConfigError, match="no_such.yaml"):
        resolve_config_file("instaorder/no_such.yaml")


def test_inference_defaults_follow_each_reference():
    from mask2former.config import add_maskformer2_config, get_base_cfg

    m2f = get_base_cfg()
    add_maskformer2_config(m2f)
    test = m2f.MODEL.MASK_FORMER.TEST
    assert (test.SEMANTIC_ON, test.INSTANCE_ON, test.PANOPTIC_ON) == (True, False, False)
    test = get_cfg().MODEL.MASK_FORMER.TEST  # InstaOrder overrides Mask2Former's
    assert (test.SEMANTIC_ON, test.INSTANCE_ON, test.PANOPTIC_ON) == (False, False, True)
