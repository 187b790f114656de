"""The labelme reader: a folder of labelme JSONs (each beside its image, or holding it as
imageData) read into the in-memory COCO instances dict that
``finetune.data.coco.load_coco_images`` loads for a COCO file, so training, evaluation, the
per-class table, ``best.pth`` and --predict's class names work unchanged. Its checks need the
user's own file, so every error names the labelme JSON (and its shape), never the dict built
from it.
"""

import atexit
import base64
import io
import json
import math
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

from finetune.data.coco import KindLines, check_label_names
from finetune.data.image_files import IMAGE_EXTENSIONS, image_size
from finetune.data.masks import (
    ROUNDING,
    clip_to_image,
    far_outside,
    far_outside_text,
    mask_to_rle,
    polygon_area,
    segmentation_mask,
)
from finetune.data.yolo import is_yolo_file
from finetune.errors import DatasetError, one_line


def _json_files(folder):
    """Every ``*.json`` under ``folder`` (subfolders too, hidden ones skipped), sorted."""
    found = []
    for here, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(here, f) for f in sorted(files) if f.lower().endswith(".json") and not f.startswith(".")]
    return found


def reads_as_labelme(path):
    """A folder without Penn-Fudan's PNGImages/ or PedMasks/: read as labelme (an empty one then
    says what --data-path takes, rather than naming a missing PNGImages/)."""
    return os.path.isdir(path) and not any(os.path.isdir(os.path.join(path, sub)) for sub in ("PNGImages", "PedMasks"))


def is_labelme_folder(path):
    """Such a folder holding JSON files (labelme saves one per image)."""
    return reads_as_labelme(path) and bool(_json_files(path))


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read it ({e.strerror or e}).") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text, so not a labelme JSON. Save it again in labelme or move it out "
                           f"of the folder.") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno} ({e.msg}). Save it again in "
                           f"labelme or move it out of the folder.") from None


def _annotation(ann_id, image_id, category_id, parts, height, width):
    """A COCO annotation from ``parts``: flat polygons, or (H, W) masks (labelme "mask" shapes)."""

    polygons = [p for p in parts if not isinstance(p, np.ndarray)]
    if len(polygons) == len(parts):
        xs = [v for p in parts for v in p[0::2]]
        ys = [v for p in parts for v in p[1::2]]
        x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
        return dict(id=ann_id, image_id=image_id, category_id=category_id, bbox=[x0, y0, x1 - x0, y1 - y0],
                    segmentation=[list(map(float, p)) for p in parts], iscrowd=0,
                    area=polygon_area(parts, height, width))
    mask = np.zeros((height, width), bool)  # a mask among the parts: the object is their union, as an RLE
    for p in parts:
        mask |= p if isinstance(p, np.ndarray) else segmentation_mask([p], height, width).astype(bool)
    ys, xs = np.nonzero(mask)
    box = [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())] \
        if len(xs) else [0.0, 0.0, 0.0, 0.0]
    return dict(id=ann_id, image_id=image_id, category_id=category_id, bbox=box, segmentation=mask_to_rle(mask),
                iscrowd=0, area=float(mask.sum()))


_EMBEDDED = {}  # folder for images that exist only as a JSON's imageData, made once per process


def _embedded_image(json_path, image_data):
    """The JSON's ``imageData`` written as an image file (the datasets read files by path), in a
    temporary folder removed when the process ends; the user's folder is never written to."""

    try:
        raw = base64.b64decode(image_data, validate=False)
        with Image.open(io.BytesIO(raw)) as pil:
            ext = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "TIFF": ".tif",
                   "WEBP": ".webp"}.get(pil.format, ".png")
    except (ValueError, TypeError, OSError, SyntaxError, Image.DecompressionBombError):
        raise DatasetError(f"{json_path}: its image file is missing and its imageData is not an image. Put the "
                           f"image beside the JSON (as its imagePath says).") from None
    if "dir" not in _EMBEDDED:
        _EMBEDDED["dir"] = tempfile.mkdtemp(prefix="labelme-images-")
        atexit.register(shutil.rmtree, _EMBEDDED["dir"], True)
    path = os.path.join(_EMBEDDED["dir"], f"{len(os.listdir(_EMBEDDED['dir'])):06d}{ext}")
    with open(path, "wb") as f:
        f.write(raw)
    return path


def _labelme_image(json_path, doc):
    """The image of one labelme JSON: ``imagePath`` relative to the JSON (Windows separators too),
    else the same file name beside the JSON; else its embedded ``imageData``. Returns the path."""
    here = os.path.dirname(json_path)
    image_path = doc.get("imagePath")
    places = []
    if isinstance(image_path, str) and image_path:
        rel = image_path.replace("\\", "/")
        places = [os.path.normpath(os.path.join(here, rel)), os.path.join(here, os.path.basename(rel))]
        found = next((p for p in places if os.path.isfile(p)), None)
        if found:
            return found
    if isinstance(doc.get("imageData"), str) and doc["imageData"]:
        return _embedded_image(json_path, doc["imageData"])
    stem = os.path.splitext(json_path)[0]  # no imagePath, or a wrong one: an image of the JSON's own name
    beside = [stem + ext for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS)]
    found = next((p for p in beside if os.path.isfile(p)), None)
    if found:
        return found
    places.append(stem + ".*")
    looked = f"; looked for {' and '.join(dict.fromkeys(places))}"
    raise DatasetError(f"{json_path}: its image is missing{looked}, and the JSON holds no imageData. Put the image "
                       f"there or fix imagePath.")


def _is_coordinate(v):
    """A finite number (an integer of any size: ``far_outside`` compares it exactly); not a bool."""
    return (isinstance(v, float) and math.isfinite(v)) or (isinstance(v, int) and not isinstance(v, bool))


def _points(json_path, index, shape, least, height, width):
    """The shape's points as ``[(x, y)]``, checked: numbers, ``least`` of them, none far outside
    the ``width`` x ``height`` image (``finetune.data.masks.far_outside``)."""
    where = f"{json_path}: shape {index} ({shape.get('shape_type') or 'polygon'} \"{one_line(shape.get('label'))}\")"
    pts = shape.get("points")
    ok = isinstance(pts, list) and all(isinstance(p, (list, tuple)) and len(p) == 2 and
                                       all(_is_coordinate(v) for v in p) for p in pts)
    if not ok:
        raise DatasetError(f"{where}: \"points\" is not a list of [x, y] numbers. Fix the shape in labelme or delete "
                           f"it.")
    if len(pts) < least:
        raise DatasetError(f"{where}: {len(pts)} point(s); a {shape.get('shape_type') or 'polygon'} needs "
                           f"{least}{' or more' if least == 3 else ''}. Fix the shape in labelme or delete it.")
    point = far_outside([v for p in pts for v in p], height, width)
    if point is not None:  # pycocotools would allocate without bound, or crash (1e12: a segfault)
        raise DatasetError(f"{where}: \"points\" has {far_outside_text(point, height, width)}. Fix the shape in "
                           f"labelme or delete it.")
    return [(float(x), float(y)) for x, y in pts]


def _on_image(flat, height, width, clipped):
    """The flat polygon clipped onto the image (its points at most ``SLIGHTLY_OUTSIDE`` past an
    edge, ``_points``); ``clipped()`` is called when a point moved."""
    flat, moved = clip_to_image(flat, height, width)
    if moved > ROUNDING:  # (less: rounding, clipped without a word)
        clipped()
    return flat


def _labelme_mask(json_path, index, shape, height, width):
    """A labelme "mask" shape: a PNG (base64) of the region between its two points."""
    (x0, y0), (x1, y1) = _points(json_path, index, shape, 2, height, width)[:2]
    x0, y0 = int(min(x0, x1)), int(min(y0, y1))
    try:
        with Image.open(io.BytesIO(base64.b64decode(shape.get("mask") or "", validate=False))) as pil:
            part = np.asarray(pil.convert("L")) > 0
    except (ValueError, TypeError, OSError, SyntaxError, Image.DecompressionBombError):
        label = one_line(shape.get("label"))
        raise DatasetError(f"{json_path}: shape {index} (mask \"{label}\"): its \"mask\" is not a "
                           f"base64 PNG. Draw the mask again in labelme or delete it.") from None
    mask = np.zeros((height, width), bool)
    h, w = min(part.shape[0], height - y0), min(part.shape[1], width - x0)
    if h > 0 and w > 0 and x0 >= 0 and y0 >= 0:
        mask[y0:y0 + h, x0:x0 + w] = part[:h, :w]
    return mask


def _shape_part(json_path, index, shape, height, width, clipped):
    """One labelme shape as a flat polygon [x1, y1, ...] or a mask; None for a type without area.
    Polygons and rectangles with points a little outside the image are clipped onto it
    (``clipped()`` is called); a circle is drawn whole (pycocotools keeps the part inside)."""
    kind = shape.get("shape_type") or "polygon"  # labelme 3 wrote no shape_type: polygons
    if kind in ("polygon", "rotation"):  # "rotation": X-AnyLabeling's rotated box, its 4 corners
        return _on_image([v for p in _points(json_path, index, shape, 3, height, width) for v in p], height, width,
                         clipped)
    if kind == "rectangle":  # two opposite corners, in any order (4 corners from some other tools)
        pts = _points(json_path, index, shape, 2, height, width)
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
        return _on_image([x0, y0, x1, y0, x1, y1, x0, y1], height, width, clipped)
    if kind == "circle":  # the centre and one point on the circle
        (cx, cy), (px, py) = _points(json_path, index, shape, 2, height, width)[:2]
        r = math.hypot(px - cx, py - cy)
        n = max(16, int(math.ceil(2 * math.pi * r / 2)))  # a vertex every ~2 px: rasterises like the circle
        a = np.linspace(0, 2 * math.pi, n, endpoint=False)
        return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1).flatten().tolist()
    if kind == "mask":
        return _labelme_mask(json_path, index, shape, height, width)
    return None


def _sort_json_files(files):
    """The JSON files read and sorted: labelme ``(path, doc)`` pairs, COCO files, and the rest."""
    docs, coco_files, others = [], [], []
    for path in files:
        doc = _read_json(path)
        if isinstance(doc, dict) and isinstance(doc.get("shapes"), list):
            docs.append((path, doc))
        elif isinstance(doc, dict) and all(k in doc for k in ("images", "annotations", "categories")):
            coco_files.append(path)
        else:
            others.append(path)
    return docs, coco_files, others


def _check_holds_labelme(folder, files, docs, coco_files):
    """Refuse a folder mixing labelme JSONs and a COCO file, or one without labelme JSONs (saying what it holds)."""
    if docs and coco_files:
        raise DatasetError(f"{folder}: holds both labelme JSONs ({len(docs)}, e.g. {os.path.basename(docs[0][0])}) "
                           f"and a COCO file ({coco_files[0]}): pass the COCO file itself as --data-path, or move it "
                           f"out of the folder to train on the labelme files.")
    if not docs:
        yamls = sorted(f for f in os.listdir(folder) if is_yolo_file(f))
        found = f" (its JSON files are a COCO file, {coco_files[0]}: pass that file as --data-path)" if coco_files \
            else f" (for a YOLO dataset pass its {os.path.join(folder, yamls[0])})" if yamls \
            else f" ({len(files)} JSON file(s), none with \"shapes\")" if files else ""
        if files and any(f.lower().endswith(".xml") for f in os.listdir(folder)):  # VOC XMLs beside stray JSONs
            found += " (its XML files are read as Pascal VOC once the JSON files are moved out)"
        raise DatasetError(f"{folder}: no labelme JSON files{found}. --data-path takes a folder of labelme JSONs "
                           f"beside their images, a COCO file (.json), a YOLO data.yaml, a Pascal VOC folder "
                           f"(Annotations/ and JPEGImages/, or XMLs beside their images) or a Penn-Fudan folder.")


def _labelme_image_entry(folder, image_id, path, doc):
    """The COCO image dict of one labelme JSON, its size checked against the JSON's imageWidth x imageHeight."""
    image = _labelme_image(path, doc)
    width, height = image_size(image, path)
    said = (doc.get("imageWidth"), doc.get("imageHeight"))
    if all(isinstance(v, int) and not isinstance(v, bool) for v in said) and said != (width, height):
        raise DatasetError(f"{path}: imageWidth x imageHeight is {said[0]}x{said[1]}, but its image {image} is "
                           f"{width}x{height} pixels (upright). Annotate this image again in labelme.")
    return dict(id=image_id, file_name=os.path.relpath(image, folder) if not image.startswith(
        _EMBEDDED.get("dir", "\0")) else os.path.relpath(path, folder), width=width, height=height, path=image)


def _check_shape_fields(path, index, shape):
    """The fields of a shape read besides its label and points have labelme's types: ``shape_type``
    text (or none: labelme 3's polygons), ``group_id`` a number (or text), or null."""
    def fail(key, expected):
        value = repr(shape[key]) if len(repr(shape[key])) <= 60 else repr(shape[key])[:57] + "..."
        raise DatasetError(f"{path}: shape {index} (\"{one_line(shape['label'])}\"): \"{key}\" is {value}; expected "
                           f"{expected}. Fix the shape in labelme or delete it.")

    if shape.get("shape_type") is not None and not isinstance(shape["shape_type"], str):
        fail("shape_type", "text (polygon, rectangle, circle, mask, ...)")
    group = shape.get("group_id")
    if isinstance(group, bool) or (group is not None and not isinstance(group, (int, float, str))):
        fail("group_id", "a number (or text), or null")


def _shape_objects(folder, path, doc, height, width, warnings):
    """The objects of one labelme JSON: its shapes, those with the same label and ``group_id`` as one."""
    groups = {}
    for index, shape in enumerate(doc["shapes"]):
        if not isinstance(shape, dict) or not isinstance(shape.get("label"), str) or not shape["label"]:
            raise DatasetError(f"{path}: shape {index} has no \"label\" text. Fix it in labelme or delete it.")
        _check_shape_fields(path, index, shape)
        where = f"{os.path.relpath(path, folder)} shape {index}"
        part = _shape_part(path, index, shape, height, width, lambda where=where: warnings.add(
            "shape(s) with points a little outside the image, clipped", where))
        if part is None:
            warnings.add(f"{one_line(shape.get('shape_type'))} shape(s) skipped (no area to learn from)", where)
            continue
        group = shape.get("group_id")
        key = (shape["label"], group) if group is not None else (shape["label"], "shape", index)
        groups.setdefault(key, dict(label=shape["label"], where=where, parts=[]))["parts"].append(part)
    return list(groups.values())


def _read_labelme_docs(folder, docs, warnings):
    """The images of the labelme JSONs, and their objects as ``(image_id, object, height, width)``."""
    images, objects = [], []
    for image_id, (path, doc) in enumerate(docs, 1):
        image = _labelme_image_entry(folder, image_id, path, doc)
        images.append(image)
        height, width = image["height"], image["width"]
        shape_objects = _shape_objects(folder, path, doc, height, width, warnings)
        objects += [(image_id, obj, height, width) for obj in shape_objects]
    return images, objects


def _paired_images(images, docs):
    """Each image file's real path and the JSON annotating it; refuses an image that two JSONs annotate."""
    paired = {}
    for im, (path, _) in zip(images, docs):
        if not im["path"].startswith(_EMBEDDED.get("dir", "\0")):  # one image, two JSONs: which labels hold?
            first = paired.setdefault(os.path.realpath(im["path"]), path)
            if first != path:
                raise DatasetError(f"{path}: annotates {im['path']}, as {first} does; the image would be in the data "
                                   f"twice, with different labels. Delete one JSON or point its imagePath elsewhere.")
    return paired


def _note_unannotated_images(folder, paired, notes):
    """Note the images under ``folder`` that no labelme JSON annotates (not annotated, so not used)."""
    for here, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            full = os.path.join(here, name)
            if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.realpath(full) not in paired:
                notes.add("image(s) without a labelme JSON not used (save an empty one in labelme to train on it as "
                          "a negative)", os.path.relpath(full, folder))

def _labelme_annotations(objects, labels, why, notes):
    """The COCO annotations of the objects labelled with one of ``labels``; a note per label left out."""
    category = {name: k + 1 for k, name in enumerate(labels)}
    annotations, dropped = [], {}
    for image_id, obj, height, width in objects:
        if obj["label"] not in category:
            dropped.setdefault(obj["label"], []).append(obj["where"])
            continue
        annotations.append(_annotation(obj["where"], image_id, category[obj["label"]], obj["parts"], height, width))
    for label, places in dropped.items():
        notes.kinds[f"object(s) labelled \"{one_line(label)}\" left out ({why})"] = places
    return annotations


def read_labelme_folder(folder, class_names=None, why="not in --classes"):
    """A labelme folder as a COCO instances dict (each image also has ``path``, the file found).

    ``class_names``: the classes in this order, other labels dropped (one note line per label,
    saying ``why``);
    None: every label, sorted. Shapes of one image with the same label and ``group_id`` are one
    object. Shapes without area (line, point, ...) are skipped with one warning line per kind.
    """
    files = _json_files(folder)
    docs, coco_files, others = _sort_json_files(files)
    _check_holds_labelme(folder, files, docs, coco_files)
    notes, warnings = KindLines(folder, "note", "", "", 3), KindLines(folder, "warning", "", "", 3)
    for path in others:
        notes.add("JSON file(s) without labelme \"shapes\" not read", os.path.relpath(path, folder))
    images, objects = _read_labelme_docs(folder, docs, warnings)
    used = {obj["label"] for _, obj, _, _ in objects}
    _note_unannotated_images(folder, _paired_images(images, docs), notes)
    check_label_names(folder, used, class_names, why, warnings, "labels", "rename them in labelme to merge them")
    labels = sorted(used) if class_names is None else list(class_names)
    annotations = _labelme_annotations(objects, labels, why, notes)
    warnings.print()
    notes.print()
    return dict(images=images, annotations=annotations,
                categories=[dict(id=k + 1, name=name) for k, name in enumerate(labels)])
