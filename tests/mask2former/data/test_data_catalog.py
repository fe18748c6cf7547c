"""Dataset/metadata catalogs and the COCO panoptic category table."""

from __future__ import annotations

import pytest

from mask2former.data.catalog import DatasetCatalog, Deferred, MetadataCatalog
from mask2former.data.coco_categories import COCO_CATEGORIES, coco_panoptic_metadata


def test_register_get_and_unknown_name_lists_known():
    DatasetCatalog.register("test_data_catalog_toy", lambda: [{"image_id": 1}])
    try:
        assert DatasetCatalog.get("test_data_catalog_toy") == [{"image_id": 1}]
        with pytest.raises(KeyError, match="already registered"):
            DatasetCatalog.register("test_data_catalog_toy", list)
        with pytest.raises(KeyError, match="test_data_catalog_toy"):
            DatasetCatalog.get("no_such_dataset")
    finally:
        DatasetCatalog.remove("test_data_catalog_toy")
    assert "test_data_catalog_toy" not in DatasetCatalog


def test_metadata_attribute_access_set_get_and_conflict():
    meta = MetadataCatalog.get("test_data_catalog_meta")
    meta.set(thing_classes=["a", "b"], evaluator_type="instaorder")
    assert meta.thing_classes == ["a", "b"]
    assert meta.get("missing", 7) == 7
    meta.set(evaluator_type="instaorder")  # same value: allowed
    with pytest.raises(ValueError, match="evaluator_type"):
        meta.set(evaluator_type="coco")
    with pytest.raises(AttributeError, match="available"):
        _ = meta.nothing_here
    calls = []
    meta.set(json_file=Deferred(lambda: calls.append(1) or "x.json"))
    assert calls == []  # not evaluated at set time
    assert meta.json_file == "x.json" and calls == [1]
    MetadataCatalog.remove("test_data_catalog_meta")


def test_coco_panoptic_categories():
    assert len(COCO_CATEGORIES) == 133
    ids = [c["id"] for c in COCO_CATEGORIES]
    assert ids == sorted(ids) and len(set(ids)) == 133
    assert sum(c["isthing"] for c in COCO_CATEGORIES) == 80
    # things first: contiguous ids 0-79 are things, 80-132 stuff
    assert all(c["isthing"] for c in COCO_CATEGORIES[:80])
    assert COCO_CATEGORIES[0]["name"] == "person" and COCO_CATEGORIES[-1]["name"] == "rug-merged"
    meta = coco_panoptic_metadata()
    assert len(meta["thing_classes"]) == 80 and len(meta["stuff_classes"]) == 133
    assert meta["thing_dataset_id_to_contiguous_id"][90] == 79
    assert meta["stuff_dataset_id_to_contiguous_id"][92] == 80
    assert meta["stuff_dataset_id_to_contiguous_id"][200] == 132
