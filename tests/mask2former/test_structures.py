"""``Instances``: field access, length checks, indexing, device moves and pickling; the mask
conversions (boxes, COCO RLE, panoptic PNG ids) against their definitions."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

from mask2former.structures import (
    Instances,
    decode_segmentation,
    encode_rle,
    id2rgb,
    mask_bbox,
    masks_to_boxes,
    masks_to_xywh,
    rgb2id,
)


def _make(n: int = 3) -> Instances:
    return Instances(
        (4, 5), gt_classes=torch.arange(n), gt_masks=torch.zeros(n, 4, 5, dtype=torch.bool)
    )


def test_fields_and_length():
    inst = _make()
    assert len(inst) == 3 and inst.image_size == (4, 5)
    assert inst.has("gt_classes") and not inst.has("scores")
    with pytest.raises(ValueError, match="length 2"):
        inst.scores = torch.zeros(2)
    with pytest.raises(AttributeError, match="no field 'scores'"):
        _ = inst.scores


def test_indexing_and_to():
    inst = _make()
    assert inst[1].gt_classes.tolist() == [1]
    assert inst[-1].gt_classes.tolist() == [2]
    assert inst[torch.tensor([True, False, True])].gt_classes.tolist() == [0, 2]
    assert inst.to("cpu").gt_masks.shape == (3, 4, 5)
    with pytest.raises(IndexError):
        _ = inst[3]


def test_pickle_round_trip():
    inst = pickle.loads(pickle.dumps(_make()))
    assert inst.gt_classes.tolist() == [0, 1, 2] and inst.image_size == (4, 5)
    assert len(Instances((1, 1))) == 0


def _random_masks() -> torch.Tensor:
    """Tensor[6, 9, 11] bool: sparse random masks, the last one empty."""
    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(6, 9, 11, generator=gen) > 0.9
    masks[-1] = False
    return masks


def test_boxes_are_first_and_one_past_last_pixel():
    masks = _random_masks()
    xyxy, xywh = masks_to_boxes(masks), masks_to_xywh(masks)
    for mask, box, coco in zip(masks, xyxy, xywh, strict=True):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        if len(xs):
            expected = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        else:
            expected = [0, 0, 0, 0]
        assert box.tolist() == [float(v) for v in expected]
        assert coco.tolist() == [box[0], box[1], box[2] - box[0], box[3] - box[1]]
        assert mask_bbox(mask.numpy()) == tuple(int(v) for v in coco.tolist())
    assert xyxy.dtype == torch.float32
    assert mask_bbox(np.zeros((3, 4), dtype=bool)) == (0, 0, 0, 0)


def test_rle_decodes_to_the_mask():
    mask = _random_masks()[0].numpy()
    rle = encode_rle(mask)
    assert rle["size"] == [9, 11] and isinstance(rle["counts"], str)
    decoded = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
    assert (decoded.astype(bool) == mask).all()
    assert (decode_segmentation(rle, 9, 11) == mask).all()
    flat = mask.flatten(order="F").astype(np.int64)  # uncompressed RLE: run lengths, 0s first
    runs = np.diff(np.flatnonzero(np.diff(np.r_[-1, flat, -1])))
    counts = ([0] if flat[0] else []) + runs.tolist()
    assert (decode_segmentation({"size": [9, 11], "counts": counts}, 9, 11) == mask).all()


def test_polygons_decode_merged_and_bad_segmentations_are_refused():
    square = [1, 1, 5, 1, 5, 4, 1, 4]  # x, y corners
    mask = decode_segmentation([square, [7, 6, 9, 6, 9, 8, 7, 8]], 9, 11)
    assert mask.dtype == bool and mask[2, 3] and mask[7, 8] and not mask[6, 3]
    assert not decode_segmentation([], 9, 11).any()
    with pytest.raises(ValueError, match="of type str"):
        decode_segmentation("garbage", 9, 11)
    with pytest.raises(ValueError, match="image is"):
        decode_segmentation(encode_rle(np.zeros((4, 4), dtype=bool)), 9, 11)


def test_panoptic_ids_round_trip_through_png_colours():
    ids = np.array([[0, 1, 255], [256, 65535, 65536], [2**24 - 1, 123456, 7]])
    rgb = id2rgb(ids)
    assert rgb.dtype == np.uint8 and rgb[1, 0].tolist() == [0, 1, 0]
    assert (rgb2id(rgb) == ids).all() and rgb2id(rgb).dtype == np.int64
    assert rgb2id(rgb, np.int32).dtype == np.int32
