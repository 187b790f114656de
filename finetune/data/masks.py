"""Object outlines as COCO stores them: polygon areas and masks, binary masks as run-length
encodings (RLE), one home for the readers, the synthetic data, ``--predict`` and the ONNX check."""

import numpy as np
from pycocotools import mask as coco_mask


def _polygons_rle(flat, height, width):
    """The union of COCO polygons ``flat`` (lists of x, y, ...) as one RLE, as pycocotools rasterises them."""
    return coco_mask.merge(coco_mask.frPyObjects(flat, height, width))


def polygon_area(flat, height, width):
    """Pixel area of the union of COCO polygons ``flat`` (lists of x, y, ...) in an image of that size."""
    return float(coco_mask.area(_polygons_rle(flat, height, width)))


def segmentation_mask(seg, height, width):
    """An (H, W) uint8 mask of a COCO ``segmentation``: polygons (lists of x, y, ...; their union),
    an uncompressed RLE (``counts`` a list) or a compressed one (``counts`` str or bytes)."""
    if isinstance(seg, list):
        rle = _polygons_rle(seg, height, width)
    elif isinstance(seg.get("counts"), list):
        rle = coco_mask.frPyObjects(seg, height, width)
    else:
        rle = dict(seg, counts=seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"])
    return coco_mask.decode(rle)


def mask_to_rle(mask, compressed=True):
    """A COCO RLE of a binary (H, W) mask (numpy or torch), JSON-ready: ``counts`` a str, or with
    ``compressed`` False the run lengths as a list (COCO's uncompressed RLE, as crowd regions often
    are). A uint8 mask in Fortran order is encoded without a copy."""
    mask = mask.numpy() if hasattr(mask, "numpy") else mask
    if not compressed:
        flat = mask.astype(np.uint8).flatten(order="F")
        changes = np.flatnonzero(np.diff(flat)) + 1
        runs = np.diff(np.concatenate([[0], changes, [flat.size]]))
        counts = runs.tolist() if flat[0] == 0 else [0] + runs.tolist()  # COCO starts with a run of zeros
        return dict(size=list(mask.shape), counts=counts)
    rle = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    return dict(size=list(rle["size"]), counts=rle["counts"].decode("ascii"))


def rle_counts(text):
    """The run lengths of a compressed COCO RLE string (pycocotools' rleFrString): 5 bits per
    character from '0', a continuation bit, a sign bit, each count after the second a difference
    to the count two before. Raises ValueError for a character outside the alphabet or a cut end."""
    counts, p = [], 0
    while p < len(text):
        x, k, more = 0, 0, True
        while more:
            if p >= len(text):
                raise ValueError("the string ends inside a count")
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"{text[p]!r} is not an RLE character")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        counts.append(x + counts[-2] if len(counts) > 2 else x)
    return counts
