"""The COCO reader: instances files (your own data: CVAT, labelme2coco, Roboflow exports) read,
checked and served as a dataset.

``read_coco_file`` checks the JSON, ``coco_classes`` maps its categories to labels 1..K,
``load_coco_images`` finds and checks every image (``image_places``) and cleans the annotations
(one warning line per kind, ``KindLines``), ``CocoFormatDataset`` serves the result as
``PennFudanDataset`` serves a folder, and ``coco_ground_truth`` is what COCO evaluation scores
against. ``finetune.data.labelme`` and ``finetune.data.yolo`` build the same COCO dict from
labelme folders and YOLO data.yaml files and hand it to ``load_coco_images``. Images are
converted to RGB as the Penn-Fudan reader does (``finetune.data.image_files.to_rgb``).
"""

import contextlib
import io
import json
import math
import os
import sys
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from finetune.data.image_files import to_rgb
from finetune.data.masks import ROUNDING, clip_to_image, far_outside, far_outside_text, rle_counts, segmentation_mask
from finetune.errors import DatasetError, one_line

REQUIRED_FIELDS = {"images": ("id", "file_name", "width", "height"),
                   "annotations": ("id", "image_id", "category_id", "bbox"),
                   "categories": ("id", "name")}


def read_coco_file(path):
    """A COCO instances file, checked: JSON, the three lists, their required fields, unique ids,
    annotations that point at existing images and categories. Errors name the file and the fix."""
    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: a byte-order mark some Windows tools write
            data = json.load(f)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read it ({e.strerror or e}).") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text; a COCO file is JSON. Export it again.") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno} ({e.msg}). "
                           f"Fix the file or export it again.") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: the top level is a {type(data).__name__}, not a COCO instances file (an object "
                           f"with images, annotations and categories). Per-image JSON (labelme) must be converted, "
                           f"e.g. with labelme2coco.")
    for key, fields in REQUIRED_FIELDS.items():
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{path}: no \"{key}\" list; a COCO instances file has images, annotations and "
                               f"categories.")
        seen, one = set(), dict(images="image", annotations="annotation", categories="category")[key]
        for i, item in enumerate(data[key]):
            missing = [f for f in fields if not isinstance(item, dict) or f not in item]
            if missing:
                raise DatasetError(f"{path}: {key}[{i}] has no \"{missing[0]}\" (every {one} needs "
                                   f"{', '.join(fields)}).")
            if not _is_id(item["id"]):
                raise DatasetError(f"{path}: {one} {item['id']!r}: \"id\" is {item['id']!r}; expected an integer "
                                   f"(or a string). Fix it or export the file again.")
            if item["id"] in seen:
                raise DatasetError(f"{path}: {one} id {item['id']} appears twice (pycocotools would silently "
                                   f"keep one); give every {one} its own id.")
            seen.add(item["id"])
    _check_values(data, path)
    image_ids, category_ids = {im["id"] for im in data["images"]}, {c["id"] for c in data["categories"]}
    for ann in data["annotations"]:
        if ann["image_id"] not in image_ids:
            raise DatasetError(f"{path}: annotation {ann['id']} refers to image_id {ann['image_id']!r}, which is not "
                               f"in \"images\".")
        if ann["category_id"] not in category_ids:
            raise DatasetError(f"{path}: annotation {ann['id']} refers to category_id {ann['category_id']!r}, which "
                               f"is not in \"categories\".")
    return data


def _is_number(value):
    """A number a float holds: not a bool, nor an integer past 1.8e308 (float() would overflow)."""
    return isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool)
                                        and abs(value) <= sys.float_info.max)


def _is_name(value):
    """A usable category name: text, or a number (read as text)."""
    return isinstance(value, str) or _is_number(value)


def _whole(value):
    """``value`` as an int when it is a whole number (exporters write 640, 640.0 or "640"), else None."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _is_id(value):
    """A usable id: an integer (also written as 3.0, as numpy-based exporters do) or a string."""
    return isinstance(value, str) or _whole(value) is not None


def _check_values(data, path):
    """The values of the fields read here have the types the COCO format gives them; the first
    that does not is an error naming the item, the field and what it should be."""
    def fail(what, key, value, expected):
        what = one_line(what)  # an id holding a newline
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise DatasetError(f"{path}: {what}: \"{key}\" is {shown}; expected {expected}. Fix it or export the file "
                           f"again.")

    for c in data["categories"]:
        what = f"category {c['id']}"
        if not _is_name(c["name"]):
            fail(what, "name", c["name"], "the class name (text)")
        if c.get("supercategory") is not None and not isinstance(c["supercategory"], str):
            fail(what, "supercategory", c["supercategory"], "the name of the category's group (text), or none")
    sizes = {}
    for im in data["images"]:
        what = f"image {im['id']}"
        if not isinstance(im["file_name"], str) or not im["file_name"]:
            fail(what, "file_name", im["file_name"], "the image's file name")
        for key in ("width", "height"):
            if _whole(im[key]) is None or _whole(im[key]) < 1:
                fail(what, key, im[key], "a whole number of pixels >= 1")
        sizes[im["id"]] = [_whole(im["height"]), _whole(im["width"])]
    for ann in data["annotations"]:
        what = f"annotation {ann['id']}"
        for key in ("image_id", "category_id"):
            if not _is_id(ann[key]):
                fail(what, key, ann[key], "an integer (or a string) id")
        box = ann["bbox"]
        if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box):
            fail(what, "bbox", box, "[x, y, width, height], 4 numbers")
        if "iscrowd" in ann and ann["iscrowd"] not in (0, 1):
            fail(what, "iscrowd", ann["iscrowd"], "0 or 1")
        # (COCO evaluation ranks objects by area: NaN would fall in every size range, a negative one in none)
        if "area" in ann and not (_is_number(ann["area"]) and 0 <= ann["area"] < math.inf):
            fail(what, "area", ann["area"], "a number of pixels >= 0")
        seg = ann.get("segmentation")
        if isinstance(seg, list) and all(isinstance(p, list) and all(_is_number(v) for v in p) for p in seg):
            point = _far_point(seg, sizes.get(ann["image_id"]))
            if point is not None:  # pycocotools would allocate without bound, or crash (1e12: a segfault)
                height, width = sizes[ann["image_id"]]
                raise DatasetError(f"{path}: {what}: \"segmentation\" has {far_outside_text(point, height, width)}; "
                                   f"polygons are in pixels of their image. Fix the annotation or export the file "
                                   f"again.")
            continue
        if seg is None:
            continue
        if not isinstance(seg, dict):
            fail(what, "segmentation", seg, "polygons [[x1, y1, x2, y2, ...], ...] or an RLE {\"size\", \"counts\"}")
        if not isinstance(seg.get("counts"), (str, list)):
            fail(what, "segmentation", seg, "an RLE with \"counts\" (a string or a list of run lengths)")
        if seg.get("size") != sizes.get(ann["image_id"], seg.get("size")):
            fail(what, "segmentation", seg, f"an RLE whose \"size\" is its image's [height, width], "
                                            f"{sizes[ann['image_id']]}")


def _far_point(polygons, size):
    """The first point of ``polygons`` far outside an image of ``size`` ([height, width]; None:
    not known), or None. Parts with a NaN or infinity are left to ``_clean_annotation`` (dropped)."""
    for p in polygons if size is not None else []:
        point = far_outside(p, *size) if all(math.isfinite(v) for v in p) else None
        if point is not None:
            return point
    return None


def coco_classes(data, path):
    """The classes to train, from ``categories``: ``[{"id": file id, "name": ...}]``, label k + 1 for
    entry k, so no category id (0 included) becomes the background. A category without
    annotations that is only the supercategory of others (Roboflow adds one) is left out."""
    used = {ann["category_id"] for ann in data["annotations"]}
    # the supercategories of other categories (not of themselves, as COCO's "person"): also in a
    # file without annotations (a test split with no objects keeps the training file's classes)
    parents = {c.get("supercategory") for c in data["categories"] if c.get("supercategory") != c["name"]}
    classes = []
    categories = data["categories"]
    if all(isinstance(c["id"], int) for c in categories):
        categories = sorted(categories, key=lambda c: c["id"])
    notes = KindLines(path, "note", "", "", shown=8)  # one line for all the unused categories of a file
    for c in categories:
        if c["id"] not in used and c["name"] in parents:
            notes.add("category(ies) without annotations that are the supercategory of others: left out",
                      f"{c['id']} \"{c['name']}\"")
            continue
        if c["id"] not in used:
            notes.add("category(ies) without annotations: kept, their AP will be -1", f"{c['id']} \"{c['name']}\"")
        classes.append(dict(id=c["id"], name=str(c["name"])))
    notes.print()
    if not classes:
        raise DatasetError(f"{path}: no category to train on.")
    names = [c["name"] for c in classes]
    for c in classes:  # per-class results are keyed by name: one name per class
        if names.count(c["name"]) > 1:
            print(f"note: {path}: category {c['id']} shares the name \"{c['name']}\" with another: called "
                  f"\"{c['name']} (id {c['id']})\" here")
            c["name"] = f"{c['name']} (id {c['id']})"
    if len({c["name"] for c in classes}) < len(classes):  # a renamed one met a category already named so
        raise DatasetError(f"{path}: categories share names even as \"name (id N)\" "
                           f"({[c['name'] for c in classes]}); give each category its own name.")
    return classes


def image_places(file_name, json_path, image_dir=None):
    """Where an image of a COCO file may be: ``image_dir`` only, if given; else ``file_name``
    relative to the JSON's folder, a folder named like the JSON (train.json -> train/),
    images/ beside the JSON, images/ in its parent (CVAT: annotations/ beside images/), and the
    split's folder in its parent (COCO: annotations/instances_val2017.json, val2017/). A
    ``file_name`` with Windows separators is read with /, and an absolute one or a URL (another
    machine's) is also looked for by its last part."""
    file_name = file_name.replace("\\", "/")  # written on Windows
    names = [file_name]
    if os.path.isabs(file_name) or "://" in file_name:  # another machine's path, a URL: its name here
        names.append(os.path.basename(file_name))
    if image_dir:
        return list(dict.fromkeys(os.path.join(image_dir, n) for n in names))
    here = os.path.dirname(os.path.abspath(json_path))
    parent = os.path.dirname(here)
    stem = os.path.splitext(os.path.basename(json_path))[0]
    split = stem[len("instances_"):] if stem.startswith("instances_") else stem  # COCO: val2017/ beside annotations/
    folders = [here, os.path.join(here, stem), os.path.join(here, "images"), os.path.join(parent, "images"),
               os.path.join(parent, split)]
    return list(dict.fromkeys(os.path.join(folder, n) for n in names for folder in folders))


class KindLines:
    """One summary line per kind of problem: ``word: source: count <what><kind> (<label>first places)``.
    The defaults are the COCO reader's warnings (the first five annotation ids); the labelme and
    YOLO readers name places as file and shape or line."""

    def __init__(self, source, word="warning", what="annotation(s) ", label="ids ", shown=5):
        self.source, self.word, self.what, self.label, self.shown, self.kinds = source, word, what, label, shown, {}

    def add(self, kind, where):
        self.kinds.setdefault(kind, []).append(where)

    def print(self):
        for kind, places in self.kinds.items():
            named, count = _places_text(places[:self.shown])
            more = ", ..." if len(places) > count else ""
            print(f"{self.word}: {self.source}: {len(places)} {self.what}{kind} ({self.label}{named}{more})")


def check_label_names(folder, used, class_names, why, warnings, noun="labels", rename="rename them to merge them"):
    """For the folder readers (labelme, VOC): refuse a folder whose ``used`` label names (its ``noun``)
    include none of ``class_names``; add a ``warnings`` line (``KindLines``) per name differing from
    another only in case or spaces ("cat" and "Cat ": two classes, almost always a slip), saying how to
    ``rename`` them."""
    if class_names is not None and used and not used & set(class_names):
        raise DatasetError(f"{folder}: none of its {noun} ({', '.join(sorted(used))}) is one of the classes "
                           f"{', '.join(class_names)} ({why}); nothing would be left to learn or score. Check the "
                           f"spelling{' of --classes' if why == 'not in --classes' else ''}, or the folder.")
    twins = {}
    for label in used:
        twins.setdefault(label.strip().casefold(), []).append(label)
    for group in sorted(g for g in twins.values() if len(g) > 1):
        for label in sorted(group):
            warnings.add(f"{noun} that differ only in case or spaces, each a class of its own ({rename})", repr(label))


PLACE_CHARS, PLACES_CHARS = 48, 150  # a warning line names its first places within these (ids may be long strings)


def _places_text(places):
    """``(text, count)``: ``places`` joined by ", ", each cut to ``PLACE_CHARS`` (its middle left out) and its
    control characters escaped (an id or a name holding a newline would split the line), the first ``count``
    of them that fit ``PLACES_CHARS``."""
    texts = [one_line(p) for p in places]
    texts = [p if len(p) <= PLACE_CHARS else p[:PLACE_CHARS // 2 - 2] + "..." + p[-(PLACE_CHARS // 2 - 1):]
             for p in texts]
    kept = [texts[0]] if texts else []
    for text in texts[1:]:
        if len(", ".join(kept + [text])) > PLACES_CHARS:
            break
        kept.append(text)
    return ", ".join(kept), len(kept)


def _clean_annotation(ann, width, height, warnings):
    """``ann`` with its box clipped to the image and usable polygons, or None (no area left).

    A box that disagrees with its own segmentation (``BOX_AGREEMENT``) is taken from the
    segmentation: masks are what the exporter drew, and the bbox field is derived from them (CVAT
    has written bboxes of another shape; a polygon with a zero-width bbox is still an object)."""
    seg = _clean_segmentation(ann, width, height, warnings)
    if seg is False:
        return None
    box = _file_box(ann, width, height)
    extent = _segmentation_box(seg, height, width)
    if extent is not None and (box is None or _box_iou(box, extent) < BOX_AGREEMENT):
        warnings.add(DISAGREEING_BOX, ann["id"])
        box = extent
    elif box is None:
        x, y, w, h = (float(v) for v in ann["bbox"])
        warnings.add("with a box that is not finite (NaN or infinity), dropped" if not all(np.isfinite([x, y, w, h]))
                     else "with a box of zero or negative size inside the image, dropped", ann["id"])
        return None
    x, y, w, h = (float(v) for v in ann["bbox"])
    if box is not extent and _overshoot(x, y, x + w, y + h, width, height) > ROUNDING:
        warnings.add("with a box reaching outside the image, clipped", ann["id"])
    return dict(id=ann["id"], category_id=ann["category_id"], box=box, segmentation=seg,
                iscrowd=int(ann.get("iscrowd", 0)), area=float(ann.get("area", (box[2] - box[0]) * (box[3] - box[1]))))


# A file's bbox is kept when its IoU with its segmentation's extent is at least this: exporters'
# rounding (integer boxes around float polygons, a pixel either side) stays far above it.
BOX_AGREEMENT = 0.7
# Pixels: a box narrower or lower than this is float noise around a zero size (a YOLO w of 1e-9), no
# object; kept, it would be 0 wide in float32 or after resizing, which torchvision's detectors refuse
# ("All bounding boxes should have positive height and width"). Safe for images up to 65536 px.
MIN_BOX_SIZE = 0.01


def _file_box(ann, width, height):
    """The annotation's ``bbox`` as ``[x0, y0, x1, y1]`` clipped to the image, or None (not finite, no area inside)."""
    x, y, w, h = (float(v) for v in ann["bbox"])
    if not all(np.isfinite([x, y, w, h])):
        return None
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))
    if w <= 0 or h <= 0 or x1 - x0 < MIN_BOX_SIZE or y1 - y0 < MIN_BOX_SIZE:
        return None
    return [x0, y0, x1, y1]


def _overshoot(x0, y0, x1, y1, width, height):
    """How many pixels the box reaches past the image's edges, at most."""
    return max(-x0, -y0, x1 - width, y1 - height, 0.0)


def _box_iou(a, b):
    """IoU of two ``[x0, y0, x1, y1]`` boxes (pycocotools' box IoU, as the evaluation computes it)."""
    xywh = np.array([[a[0], a[1], a[2] - a[0], a[3] - a[1]], [b[0], b[1], b[2] - b[0], b[3] - b[1]]])
    return float(coco_mask.iou(xywh[:1], xywh[1:], [0])[0, 0])


def _segmentation_box(seg, height, width):
    """``[x0, y0, x1, y1]``: the extent of a cleaned segmentation on the image, or None (none, or empty)."""
    if seg is None:
        return None
    if isinstance(seg, list):
        xs = [v for p in seg for v in p[0::2]]
        ys = [v for p in seg for v in p[1::2]]
        box = [min(xs), min(ys), max(xs), max(ys)]
    else:
        rle = coco_mask.frPyObjects(seg, height, width) if isinstance(seg["counts"], list) else \
            dict(seg, counts=seg["counts"].encode())
        x, y, w, h = (float(v) for v in coco_mask.toBbox(rle))
        box = [x, y, x + w, y + h]
    return box if box[2] - box[0] >= MIN_BOX_SIZE and box[3] - box[1] >= MIN_BOX_SIZE else None


def _clean_segmentation(ann, width, height, warnings):
    """The annotation's usable segmentation: polygons clipped onto the image (parts with NaN or
    fewer than 3 points dropped), an RLE, or None (none, or none usable); False drops the
    annotation (an RLE that does not cover its image)."""
    seg = ann.get("segmentation")
    if isinstance(seg, list):
        finite = [p for p in seg if all(math.isfinite(v) for v in p)]
        if len(finite) < len(seg):  # pycocotools would allocate without bound on a NaN point
            warnings.add("with polygon points that are not finite (NaN or infinity), those parts dropped", ann["id"])
        clipped = [clip_to_image(p, height, width) for p in finite]  # (points far outside: refused by the readers)
        if any(moved > ROUNDING for _, moved in clipped):
            warnings.add("with polygon points a little outside the image, clipped", ann["id"])
        finite = [p for p, _ in clipped]
        parts = [p for p in finite if isinstance(p, list) and len(p) >= 6]
        if len(parts) < len(finite):
            warnings.add("with polygon parts of fewer than 3 points, dropped", ann["id"])
        if not seg:
            warnings.add(EMPTY_SEGMENTATION, ann["id"])
        return parts or None
    if isinstance(seg, dict) and not _rle_covers(seg["counts"], height * width):
        # pycocotools would fail in the middle of training, or read memory past the end as mask
        warnings.add("with an RLE whose run lengths do not add up to its image (height x width), dropped", ann["id"])
        return False
    return seg


def _rle_covers(counts, pixels):
    """Whether RLE ``counts`` (a compressed string or a list) are run lengths over exactly ``pixels``."""
    try:
        runs = rle_counts(counts) if isinstance(counts, str) else counts
    except ValueError:
        return False
    return all(isinstance(n, int) and n >= 0 for n in runs) and sum(runs) == pixels


def annotation_mask(ann, height, width):
    """An (H, W) uint8 mask from polygons, compressed or uncompressed RLE; the box without one."""

    seg = ann["segmentation"]
    if seg is None:
        mask = np.zeros((height, width), np.uint8)
        x0, y0, x1, y1 = ann["box"]
        mask[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))] = 1
        return mask
    return segmentation_mask(seg, height, width)


def _found_image(path, im, places, first_id):
    """The image file of ``im``: the first of ``places`` that exists (None: none does); refuses
    one file listed under two ids."""
    found = next((p for p in places if os.path.isfile(p)), None)
    if found is None:
        return None
    other = first_id.setdefault(os.path.realpath(found), im["id"])
    if other != im["id"]:  # one picture, two ids: its objects would be split between them
        raise DatasetError(f"{path}: images {other!r} and {im['id']!r} are both {os.path.normpath(found)}; list "
                           f"each image once (merge their annotations) or export the file again.")
    return found


def _found_images(path, images, place_lists, first_id, skip_missing):
    """The image file of each of ``images`` (``place_lists``: where each may be). All of them
    missing is an error naming where the first was looked for; some missing, an error that counts
    them, names the first few and where the others are, unless ``skip_missing``: then they are
    left out (None in the list) with one warning line."""
    found = [_found_image(path, im, places, first_id) for im, places in zip(images, place_lists)]
    missing = [im for im, f in zip(images, found) if f is None]
    if not missing:
        return found
    if len(missing) == len(images):
        im, places = images[0], place_lists[0]
        also = f" (nor any of the other {len(images) - 1})" if len(images) > 1 else ""
        raise DatasetError(f"{path}: image {im['file_name']} (id {im['id']}) not found{also}; looked in "
                           f"{', '.join(places)}. Pass --image-dir FOLDER where the images are.")
    names = ", ".join(one_line(im["file_name"]) for im in missing[:5]) + (", ..." if len(missing) > 5 else "")
    folders = [os.path.dirname(f) for f in found if f is not None]
    where = max(set(folders), key=folders.count)
    counted = f"{len(missing)} of {len(images)} images not found ({names})"
    if not skip_missing:
        raise DatasetError(f"{path}: {counted}; the other {len(images) - len(missing)} are in {where}, and these are "
                           f"not there. Restore them, or pass --skip-missing-images to train without them.")
    print(f"warning: {path}: {counted}: left out with their annotations (--skip-missing-images)")
    return found


def _decoded_size(found, path):
    """The ``(size, EXIF orientation)`` of the image file ``found``, decoded whole to catch a broken file."""
    try:  # decoded once, so a truncated file stops the run here and not epochs into it
        with Image.open(found) as pil:
            size, orientation = pil.size, pil.getexif().get(0x0112, 1)
            pil.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))  # JPEG: 1/8 scale, every byte read
            to_rgb(pil)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"{found}: cannot read this image ({str(e).splitlines()[0][:100]}). Replace it or "
                           f"remove it from {path}.") from None
    return size, orientation


def _checked_size(found, path, im, size, orientation):
    """``(width, height, rotate)`` of ``im`` as the JSON says; refuses a file of another size, even turned upright."""
    width, height = _whole(im["width"]), _whole(im["height"])
    # turned upright as annotation tools and --predict show it, where the file's size allows:
    # a quarter turn only when the JSON has the turned size
    upright = (size[1], size[0]) if orientation in (5, 6, 7, 8) else size
    rotate = orientation in (2, 3, 4, 5, 6, 7, 8) and upright == (width, height)
    if size != (width, height):
        if not rotate:
            swapped = " (width and height swapped: the image is rotated by its EXIF orientation?)" \
                if size == (height, width) else ""
            raise DatasetError(f"{found}: {size[0]}x{size[1]} pixels, but {path} says {width}x{height}"
                               f"{swapped}. Export the annotations again from these images.")
    return width, height, rotate


def _image_annotations(anns, width, height, labels, no_mask, warnings):
    """One image's cleaned annotations of a known category, each given its ``label`` 1..K."""
    anns = [a for a in (_clean_annotation(a, width, height, warnings) for a in anns)
            if a is not None and a["category_id"] in labels]
    for a in anns:
        a["label"] = labels[a["category_id"]]
        if a["id"] in no_mask and not a["iscrowd"]:
            warnings.add(NO_MASK, a["id"])
    return anns


NO_MASK = "without a segmentation among annotations with one: its box is used as its mask"
EMPTY_SEGMENTATION = "with an empty segmentation (its box is used as its mask)"
DISAGREEING_BOX = f"whose bbox disagrees with its segmentation (IoU < {BOX_AGREEMENT}), box taken from the segmentation"


class ReadOptions(NamedTuple):
    """What ``load_coco_images`` does with what some exports hold: images missing on disk (an error;
    ``skip_missing_images``: left out with a warning), crowd regions (ignore regions as COCO has
    them; ``crowd_as_objects``: objects, as CVAT marks every mask it exports ``iscrowd: 1``), and
    whether the model trains ``masks`` (without, the warnings about boxes used as masks are moot)."""

    skip_missing_images: bool = False
    crowd_as_objects: bool = False
    masks: bool = True


def _summarise(path, warnings, entries, reading):
    """The warning lines of a whole file: the mask ones dropped for a box-only model, the box
    disagreement named as the file's own fault where every segmented annotation has it; crowd
    regions made objects with ``crowd_as_objects``."""
    if not reading.masks:
        for kind in (NO_MASK, EMPTY_SEGMENTATION):
            warnings.kinds.pop(kind, None)
    anns = [a for e in entries for a in e["anns"]]
    segmented = sum(a["segmentation"] is not None for a in anns)
    if segmented > 1 and len(warnings.kinds.get(DISAGREEING_BOX, ())) == segmented:
        warnings.kinds[DISAGREEING_BOX + ": every one of them, so the file's bbox fields are wrong (an exporter's "
                       "bug)"] = warnings.kinds.pop(DISAGREEING_BOX)
    warnings.print()
    if reading.crowd_as_objects:
        for a in anns:
            a["iscrowd"] = 0


def load_coco_images(path, image_dir=None, data=None, reading=None):
    """Read and check a COCO file and its images. Returns ``(entries, classes, has_masks)``.

    ``data``: the COCO dict already built from ``path`` (a labelme folder or a YOLO data.yaml,
    ``finetune.data.labelme``, ``finetune.data.yolo``), its images with the ``path`` found for each.
    ``reading``: a ``ReadOptions`` (None: its defaults).

    ``entries``: one dict per image (path, image_id, width, height, its cleaned annotations,
    whether its EXIF orientation must be applied), in the file's order. Missing or unreadable
    images and sizes that differ from the JSON are errors (missing ones listed together);
    problems of single annotations are warnings (one line per kind) and are fixed or dropped.
    """
    reading = reading or ReadOptions()
    built = data is not None  # a labelme or YOLO reader's: its images carry the "path" it found
    data = read_coco_file(path) if data is None else data
    classes = coco_classes(data, path)
    labels = {c["id"]: k + 1 for k, c in enumerate(classes)}
    by_image = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    warnings, entries = KindLines(path), []
    has_masks = any(a.get("segmentation") for a in data["annotations"])
    # (the YOLO reader says this of its box lines itself)
    no_mask = set() if built or not has_masks else \
        {a["id"] for a in data["annotations"] if a.get("segmentation") is None}
    places = [[im["path"]] if built else image_places(im["file_name"], path, image_dir) for im in data["images"]]
    # string ids (Label Studio, hand-made files) numbered 1..N in file order: the evaluation's ids are integers
    numbered = any(_whole(im["id"]) is None for im in data["images"])
    found_images = _found_images(path, data["images"], places, {}, reading.skip_missing_images)
    for n, (im, found) in enumerate(zip(data["images"], found_images), 1):
        if found is None:
            continue
        size, orientation = _decoded_size(found, path)
        width, height, rotate = _checked_size(found, path, im, size, orientation)
        anns = _image_annotations(by_image.get(im["id"], []), width, height, labels, no_mask, warnings)
        entries.append(dict(path=found, image_id=n if numbered else _whole(im["id"]), width=width, height=height,
                            anns=anns, exif=rotate, file_name=im["file_name"]))
    _summarise(path, warnings, entries, reading)
    return entries, classes, has_masks


class CocoFormatDataset(torch.utils.data.Dataset):
    """Images of a COCO instances file, as ``PennFudanDataset`` returns them: ``(image, target)``
    with tv_tensors; ``labels`` 1..K (``classes``), ``image_id`` the file's own id. Crowd regions
    are left out of the targets (COCO evaluation keeps them, ``coco_ground_truth``)."""

    def __init__(self, entries, classes, transforms, with_masks=True):
        self.entries, self.classes, self.transforms, self.with_masks = entries, classes, transforms, with_masks
        self.imgs = [os.path.basename(e["path"]) for e in entries]

    def __getitem__(self, idx):
        e = self.entries[idx]
        with Image.open(e["path"]) as pil:
            pil = ImageOps.exif_transpose(pil) if e["exif"] else pil
            img = tv_tensors.Image(F.pil_to_tensor(to_rgb(pil)))
        anns = [a for a in e["anns"] if not a["iscrowd"]]
        boxes = torch.tensor([a["box"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(e["height"], e["width"])),
            "labels": torch.tensor([a["label"] for a in anns], dtype=torch.int64),
            "image_id": e["image_id"],
            "area": (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 2] - boxes[:, 0]),
            "iscrowd": torch.zeros((len(anns),), dtype=torch.int64),
        }
        if self.with_masks:
            masks = np.stack([annotation_mask(a, e["height"], e["width"]) for a in anns]) if anns else \
                np.zeros((0, e["height"], e["width"]), np.uint8)
            target["masks"] = tv_tensors.Mask(torch.from_numpy(masks))
        if self.transforms is not None:
            img, target = self.transforms(img, target)
        return img, target

    def get_height_and_width(self, idx):
        return self.entries[idx]["height"], self.entries[idx]["width"]

    def __len__(self):
        return len(self.entries)


def coco_ground_truth(entries, classes):
    """The COCO ground truth of ``entries``: their own annotations (crowd regions included), with
    category ids relabelled 1..K one to one (AP unchanged) and the file's image ids."""

    images, annotations = [], []
    for e in entries:
        images.append(dict(id=e["image_id"], file_name=e["file_name"], width=e["width"], height=e["height"]))
        for a in e["anns"]:
            x0, y0, x1, y1 = a["box"]
            seg = a["segmentation"] if a["segmentation"] is not None else [[x0, y0, x1, y0, x1, y1, x0, y1]]
            # numbered 1..N: pycocotools reads id 0 as "no match", and labelme/YOLO annotations are
            # named by file and shape (for the warnings), not by a number
            annotations.append(dict(id=len(annotations) + 1, image_id=e["image_id"], category_id=a["label"],
                                    bbox=[x0, y0, x1 - x0, y1 - y0], area=a["area"], iscrowd=a["iscrowd"],
                                    segmentation=seg))
    coco = COCO()
    coco.dataset = dict(images=images, annotations=annotations,
                        categories=[dict(id=k + 1, name=c["name"]) for k, c in enumerate(classes)])
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
