"""Mask2Former: the segmentation framework InstaFormer builds on (config, models, data, eval).

Importing this package never needs a compiled extension or a GPU. When it is imported before
``torch`` on a busy machine, it sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment chose a
policy (idle OpenMP threads then sleep instead of spinning: see :mod:`mask2former.utils.threads`).
"""

from mask2former.utils.threads import prefer_passive_openmp

prefer_passive_openmp()

__version__ = "0.1.0"
