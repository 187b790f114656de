"""Object outlines as COCO stores them: polygon areas and binary masks as run-length encodings
(RLE), one home for the readers, the synthetic data, ``--predict`` and the ONNX check."""

import numpy as np
from pycocotools import mask as coco_mask


def polygon_area(flat, height, width):
    """Pixel area of the union of COCO polygons ``flat`` (lists of x, y, ...) in an image of that size."""
    return float(coco_mask.area(coco_mask.merge(coco_mask.frPyObjects(flat, height, width))))


def mask_to_rle(mask):
    """A COCO RLE of a binary (H, W) mask (numpy or torch), ``counts`` as str so it is JSON-ready."""
    mask = mask.numpy() if hasattr(mask, "numpy") else mask
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return dict(size=list(rle["size"]), counts=rle["counts"].decode("ascii"))
