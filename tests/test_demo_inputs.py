"""Images given to the Predictor and the demo: one reading path with the dataset loader (pixel
types, EXIF, size limits) and one test-time size with the evaluation mapper."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from test_demo_predictor import SceneModel, make_scene, tiny_cfg
from torchvision import tv_tensors

from instaformer.apps.demo_utils import expand_inputs
from instaformer.data import InstaOrderPanopticMapper
from instaformer.data import io as image_io
from instaformer.data.augment import shortest_edge_size
from instaformer.data.io import DataError, ImageError, read_image
from instaformer.predictor import Predictor, load_image


def _gradient16() -> np.ndarray:
    return np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))


@pytest.mark.parametrize(
    ("size", "expected"),
    [((480, 640), (800, 1067)), ((500, 1000), (667, 1333)), ((640, 480), (1067, 800))],
)
def test_test_resize_rounds_half_up_like_detectron2(size, expected):
    assert shortest_edge_size(*size, 800, 1333) == expected
    assert shortest_edge_size(*size, 0, 1333) == size  # MIN_SIZE_TEST 0 keeps the size


def test_predictor_and_test_mapper_feed_the_same_input():
    cfg = tiny_cfg()
    cfg.defrost()
    cfg.INPUT.AUGMENT = True
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    predictor = Predictor(cfg, model=SceneModel(*make_scene(48, 64)[1:]))
    fed = predictor.preprocess(image)["image"]
    resize = InstaOrderPanopticMapper.from_config(cfg, is_train=False)["augmentation"]
    ids = tv_tensors.Mask(torch.zeros(1, 480, 640, dtype=torch.int32))
    mapped, mapped_ids = resize(tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)), ids)
    assert fed.shape == mapped.shape == (3, 800, 1067) and mapped_ids.shape == (1, 800, 1067)
    assert torch.equal(fed, mapped)


def test_large_images_are_fitted_to_the_test_size_once_logged(caplog):
    cfg = tiny_cfg()
    cfg.defrost()
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 48, 80
    image, panoptic, infos = make_scene(96, 128)
    predictor = Predictor(cfg, model=SceneModel(panoptic, infos))
    with caplog.at_level(logging.INFO, logger="instaformer.predictor"):
        assert predictor.preprocess(image)["image"].shape == (3, 48, 64)
        assert predictor.preprocess(image[:64])["image"].shape == (3, 40, 80)  # long side capped
        assert predictor.preprocess(image[:40, :40])["image"].shape == (3, 40, 40)  # smaller
        result = predictor(image)
    assert caplog.text.count("downscaled") == 1 and "128x96 -> 64x48" in caplog.text
    assert result.panoptic_seg.shape == (96, 128)  # results at the original size
    native = Predictor(cfg, model=SceneModel(panoptic, infos), fit_test_size=False)
    assert native.preprocess(image)["image"].shape == (3, 96, 128)


def test_blind_inference_computes_only_panoptic():
    cfg = tiny_cfg()
    cfg.defrost()
    test = cfg.MODEL.MASK_FORMER.TEST
    test.PANOPTIC_ON = test.SEMANTIC_ON = test.INSTANCE_ON = True
    predictor = Predictor(cfg)
    model = predictor.model
    assert model.default_results == ("sem_seg", "panoptic_seg", "instances")  # config untouched
    calls = []
    original = model.postprocess_image

    def spy(*args):
        calls.append(args[-1])
        return original(*args)

    model.postprocess_image = spy
    predictor(make_scene(32, 32)[0])
    assert calls == [("panoptic_seg",)]
    with torch.inference_mode():
        output = model([predictor.preprocess(make_scene(32, 32)[0])], results=("panoptic_seg",))[0]
    assert "panoptic_seg" in output and "instances" not in output and "sem_seg" not in output
    with pytest.raises(ValueError, match="unknown results"):
        model([predictor.preprocess(make_scene(32, 32)[0])], results=("panoptic",))


def test_sixteen_bit_images_are_scaled_in_every_entry_point(tmp_path):
    gradient = _gradient16()
    expected = np.round(gradient / 257).astype(np.uint8)
    Image.fromarray(gradient).save(tmp_path / "grey16.png")
    Image.fromarray(gradient).save(tmp_path / "grey16.tif")
    for path in (tmp_path / "grey16.png", tmp_path / "grey16.tif"):
        for rgb in (read_image(path), load_image(path), load_image(Image.open(path))):
            assert rgb.shape == (8, 64, 3) and (rgb == expected[:, :, None]).all()
    assert (load_image(gradient)[..., 1] == expected).all()
    assert len(np.unique(expected)) == 64  # a gradient, not flat white


def test_float_and_32_bit_images_are_refused_everywhere(tmp_path):
    values = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(values).save(tmp_path / "float.tif")
    Image.fromarray((values * 1e6).astype(np.int32)).save(tmp_path / "int32.tif")
    for name, mode in (("float.tif", "'F'"), ("int32.tif", "'I'")):
        path = tmp_path / name
        for reader in (read_image, load_image, lambda p: load_image(Image.open(p))):
            with pytest.raises(ImageError, match=f"{mode}.*range is undefined"):
                reader(path)
        with pytest.raises(ImageError, match=name):
            load_image(path)
    with pytest.raises(ImageError, match="dtype float32.*uint8"):
        load_image(values)


def test_modes_and_exif_match_the_dataset_loader(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(rgb[..., 0] > 127).save(tmp_path / "bilevel.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    for name in ("grey.png", "rgba.png", "palette.png", "bilevel.png", "rotated.jpg"):
        path = tmp_path / name
        assert np.array_equal(load_image(path), read_image(path)), name
        assert np.array_equal(load_image(Image.open(path)), read_image(path)), name
    assert np.array_equal(read_image(tmp_path / "rgba.png"), rgb)
    assert read_image(tmp_path / "rotated.jpg").shape == (20, 12, 3)  # EXIF applied
    assert np.array_equal(load_image(np.dstack([rgb, rgb[..., :1]])), rgb)


def test_absurd_sizes_are_refused_from_the_header(tmp_path, monkeypatch):
    Image.new("L", (image_io.MAX_IMAGE_SIDE + 1, 1)).save(tmp_path / "strip.png")
    with pytest.raises(ImageError, match=r"strip.png is 20001x1 pixels.*20000 pixels per side"):
        load_image(tmp_path / "strip.png")
    # a header alone: the size is refused before any pixel is decoded
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(tmp_path / "big.png")
    data = (tmp_path / "big.png").read_bytes()
    (tmp_path / "header.png").write_bytes(data[:64])
    with pytest.raises(DataError, match="truncated"):
        read_image(tmp_path / "header.png")
    monkeypatch.setattr(image_io, "MAX_IMAGE_PIXELS", 100_000)
    for reader in (read_image, load_image):
        with pytest.raises(ImageError, match=r"header.png is 400x300.*limit of 0.1 megapixels"):
            reader(tmp_path / "header.png")
    with pytest.raises(ImageError, match="400x300"):
        load_image(np.zeros((300, 400), np.uint8))
    # beyond PIL's own decompression-bomb threshold: still our message, and the demo's input
    # listing still takes the file (to report it)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="big.png is over the limit of 0.1 megapixels"):
        load_image(tmp_path / "big.png")
    assert str(tmp_path / "big.png") in expand_inputs([str(tmp_path)])
