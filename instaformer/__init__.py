"""InstaFormer: instance-wise occlusion and depth order prediction on top of Mask2Former.

Importing this package never needs a compiled extension or a GPU.
"""

__version__ = "0.1.0"
