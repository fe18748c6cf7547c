"""Mask2Former: the segmentation framework InstaFormer builds on (config, models, data, eval).

Importing this package never needs a compiled extension or a GPU.
"""

__version__ = "0.1.0"
