"""Dataset catalog, COCO panoptic categories and the detection-style data loaders."""
