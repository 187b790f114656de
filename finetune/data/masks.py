"""Object outlines as COCO stores them: polygon areas and masks, binary masks as run-length
encodings (RLE), one home for the readers, the synthetic data, ``--predict`` and the ONNX check;
and what the readers do with polygon points outside the image (``far_outside``: an error,
``clip_to_image``: a little outside, clipped)."""

import numpy as np
from pycocotools import mask as coco_mask

# Points a little outside the image (exporters' rounding, a point dropped just past the edge) are
# clipped onto it with a warning; further out the coordinates are wrong (another image's, pixels
# scaled twice), and pycocotools, which walks every polygon edge pixel by pixel at 5x, would
# allocate without bound or crash the process (a segmentation fault from 1e12 on): an error.
SLIGHTLY_OUTSIDE = 0.01  # of the image's width (for x) or height (for y), at least 1 pixel
EPS = 1e-6  # pixels: float noise (40.0000001), clipped without a word
# Pixels: a box edge or point this far past the image is exporters' rounding (x + w = 640.4 on a
# 640-pixel image), clipped without a word; further, the readers' warnings count it.
ROUNDING = 0.5


def outside_margin(size):
    """How far (pixels) past the edges of an image side of ``size`` pixels a point may lie and be clipped."""
    return max(1.0, SLIGHTLY_OUTSIDE * size)


def far_outside(flat, height, width, margin=None):
    """The first point ``(x, y)`` of the flat polygon ``flat`` (x, y, ...) further outside a
    ``width`` x ``height`` image than ``outside_margin`` (or ``margin`` pixels), else None. A
    coordinate that is NaN is not a place, so not outside (the readers drop or refuse it)."""
    mx, my = (outside_margin(width), outside_margin(height)) if margin is None else (margin, margin)
    for x, y in zip(flat[0::2], flat[1::2]):
        if x < -mx or x > width + mx or y < -my or y > height + my:
            return x, y
    return None


def _shown(value):
    """A coordinate as ``:g`` writes it; an integer too long for a float by its first digits and length."""
    try:
        return f"{value:g}"
    except OverflowError:
        return f"{str(value)[:5]}... ({len(str(abs(value)))} digits)"


def far_outside_text(point, height, width):
    """What the readers say of a ``far_outside`` point: 'the point (x, y), far outside the WxH image (...)'."""
    return (f"the point ({_shown(point[0])}, {_shown(point[1])}), far outside the {width}x{height} image (more "
            f"than {SLIGHTLY_OUTSIDE:.0%} of its size past an edge)")


def clip_to_image(flat, height, width):
    """``(flat, distance)``: the flat polygon with its points moved onto the image (x in 0..width,
    y in 0..height), as the readers clip boxes, and the farthest a point moved (pixels; 0.0 and
    ``flat`` itself when none is outside). The readers warn past ``ROUNDING``."""
    limits = (float(width), float(height))
    if all(0.0 <= v <= limits[i % 2] for i, v in enumerate(flat)):
        return flat, 0.0
    moved = [float(min(max(v, 0.0), limits[i % 2])) for i, v in enumerate(flat)]
    return moved, max(abs(a - b) for a, b in zip(moved, flat))


def _near_the_image(flat, height, width, margin):
    """Whether every coordinate of the flat polygon is a number within ``margin`` pixels of the image
    (False also where it cannot tell: a value beyond float range, or not a number)."""
    try:
        a = np.asarray(flat, dtype=np.float64)
    except (OverflowError, TypeError, ValueError):
        return False
    xs, ys = a[0::2], a[1::2]
    return bool(((xs >= -margin) & (xs <= width + margin)).all() and ((ys >= -margin) & (ys <= height + margin)).all())


def _polygons_rle(flat, height, width):
    """The union of COCO polygons ``flat`` (lists of x, y, ...) as one RLE, as pycocotools rasterises them.

    Refuses (ValueError) a point pycocotools could not rasterise: NaN, or further outside
    the image than its width + height twice over (the readers refuse points ``SLIGHTLY_OUTSIDE``
    past an edge; drawn shapes, a labelme circle, reach past it by their radius, less than that)."""
    margin = 2 * (width + height) + 16
    for p in flat:
        if _near_the_image(p, height, width, margin):  # the usual case, at numpy's speed (masks load every epoch)
            continue
        point = far_outside(p, height, width, margin=margin)
        if point is not None:
            raise ValueError(f"polygon point ({_shown(point[0])}, {_shown(point[1])}) far outside the {width}x{height} "
                             f"image: not rasterised (pycocotools would crash)")
        if any(v != v for v in p):
            raise ValueError("polygon point NaN: not rasterised")
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
