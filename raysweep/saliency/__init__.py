"""Saliency: which pixels a classifier relies on, and masks of a given share of them.

`cams.py` is the registry of CAM methods (pytorch-grad-cam), `target_layer.py` finds the layer
they read in a timm backbone, `maps.py` turns images into saliency maps for their true class,
and `masks.py` turns a map into a mask of exactly `mask_fraction` of the pixels.
"""

from raysweep.saliency.cams import create_cam, list_cam_methods
from raysweep.saliency.maps import saliency_maps
from raysweep.saliency.masks import MASK_REGIONS, mask_from_cam
from raysweep.saliency.target_layer import find_target_layer

__all__ = ["MASK_REGIONS", "create_cam", "find_target_layer", "list_cam_methods", "mask_from_cam",
           "saliency_maps"]
