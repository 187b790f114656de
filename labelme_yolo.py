"""Your own data as a labelme folder or a YOLO (Ultralytics) dataset, read into the COCO route.

Each reader turns its files into the in-memory COCO instances dict (images, annotations,
categories) that ``coco_data.load_coco_images`` loads for a COCO file, so training,
evaluation, the per-class table, ``best.pth`` and --predict's class names work unchanged. The
checks that need the user's own file happen here, so every error names the labelme JSON (and
its shape) or the YOLO label file (and its line), never the dict built from them.
"""

import base64
import io
import json
import math
import os

import numpy as np
from PIL import Image

from coco_data import KindLines, load_coco_images
from errors import DatasetError

# What PIL reads of the image formats Ultralytics accepts (its IMG_FORMATS less dng/pfm/heic).
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp")
# labelme shape types that mark no area (nothing to learn a box or a mask from)
NO_AREA_SHAPES = ("line", "linestrip", "point", "points")
# a box may touch 0 or 1 written with float noise (1.0000001): still inside the image
EPS = 1e-6
# exporters' rounding puts points a little outside the image (1.004, -0.002): clipped with a warning;
# beyond this the file is not normalised (pixel coordinates), an error
SLIGHTLY_OUTSIDE = 0.01


def is_yolo_file(path):
    return str(path).lower().endswith((".yaml", ".yml"))


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


def _image_size(path, what):
    """``(width, height)`` of the image upright (its EXIF orientation applied), from its header."""
    try:
        with Image.open(path) as pil:
            (w, h), orientation = pil.size, pil.getexif().get(0x0112, 1)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"{path}: cannot read this image ({str(e).splitlines()[0][:100]}). Replace it or remove "
                           f"it from {what}.") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _polygon_area(flat, height, width):
    from pycocotools import mask as coco_mask

    return float(coco_mask.area(coco_mask.merge(coco_mask.frPyObjects(flat, height, width))))


def _rle(mask):
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return dict(size=list(rle["size"]), counts=rle["counts"].decode("ascii"))


def _annotation(ann_id, image_id, category_id, parts, height, width):
    """A COCO annotation from ``parts``: flat polygons, or (H, W) masks (labelme "mask" shapes)."""
    from pycocotools import mask as coco_mask

    polygons = [p for p in parts if not isinstance(p, np.ndarray)]
    if len(polygons) == len(parts):
        xs = [v for p in parts for v in p[0::2]]
        ys = [v for p in parts for v in p[1::2]]
        x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
        return dict(id=ann_id, image_id=image_id, category_id=category_id, bbox=[x0, y0, x1 - x0, y1 - y0],
                    segmentation=[list(map(float, p)) for p in parts], iscrowd=0,
                    area=_polygon_area(parts, height, width))
    mask = np.zeros((height, width), bool)  # a mask among the parts: the object is their union, as an RLE
    for p in parts:
        mask |= p if isinstance(p, np.ndarray) else \
            coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects([p], height, width))).astype(bool)
    ys, xs = np.nonzero(mask)
    box = [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())] \
        if len(xs) else [0.0, 0.0, 0.0, 0.0]
    return dict(id=ann_id, image_id=image_id, category_id=category_id, bbox=box, segmentation=_rle(mask),
                iscrowd=0, area=float(mask.sum()))


# ---------------------------------------------------------------------------------------
# labelme: one JSON per image, beside it
# ---------------------------------------------------------------------------------------

_EMBEDDED = {}  # folder for images that exist only as a JSON's imageData, made once per process


def _embedded_image(json_path, image_data):
    """The JSON's ``imageData`` written as an image file (the datasets read files by path), in a
    temporary folder removed when the process ends; the user's folder is never written to."""
    import atexit
    import shutil
    import tempfile

    try:
        raw = base64.b64decode(image_data, validate=False)
        with Image.open(io.BytesIO(raw)) as pil:
            ext = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}.get(pil.format, ".png")
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


def _points(json_path, index, shape, least):
    where = f"{json_path}: shape {index} ({shape.get('shape_type') or 'polygon'} \"{shape.get('label')}\")"
    pts = shape.get("points")
    ok = isinstance(pts, list) and all(isinstance(p, (list, tuple)) and len(p) == 2 and
                                       all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                           for v in p) for p in pts)
    if not ok:
        raise DatasetError(f"{where}: \"points\" is not a list of [x, y] numbers. Fix the shape in labelme or delete "
                           f"it.")
    if len(pts) < least:
        raise DatasetError(f"{where}: {len(pts)} point(s); a {shape.get('shape_type') or 'polygon'} needs "
                           f"{least}{' or more' if least == 3 else ''}. Fix the shape in labelme or delete it.")
    return [(float(x), float(y)) for x, y in pts]


def _labelme_mask(json_path, index, shape, height, width):
    """A labelme "mask" shape: a PNG (base64) of the region between its two points."""
    (x0, y0), (x1, y1) = _points(json_path, index, shape, 2)[:2]
    x0, y0 = int(min(x0, x1)), int(min(y0, y1))
    try:
        with Image.open(io.BytesIO(base64.b64decode(shape.get("mask") or "", validate=False))) as pil:
            part = np.asarray(pil.convert("L")) > 0
    except (ValueError, TypeError, OSError, SyntaxError):
        raise DatasetError(f"{json_path}: shape {index} (mask \"{shape.get('label')}\"): its \"mask\" is not a "
                           f"base64 PNG. Draw the mask again in labelme or delete it.") from None
    mask = np.zeros((height, width), bool)
    h, w = min(part.shape[0], height - y0), min(part.shape[1], width - x0)
    if h > 0 and w > 0 and x0 >= 0 and y0 >= 0:
        mask[y0:y0 + h, x0:x0 + w] = part[:h, :w]
    return mask


def _shape_part(json_path, index, shape, height, width):
    """One labelme shape as a flat polygon [x1, y1, ...] or a mask; None for a type without area."""
    kind = shape.get("shape_type") or "polygon"  # labelme 3 wrote no shape_type: polygons
    if kind in ("polygon", "rotation"):  # "rotation": X-AnyLabeling's rotated box, its 4 corners
        return [v for p in _points(json_path, index, shape, 3) for v in p]
    if kind == "rectangle":  # two opposite corners, in any order (4 corners from some other tools)
        pts = _points(json_path, index, shape, 2)
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
        return [x0, y0, x1, y0, x1, y1, x0, y1]
    if kind == "circle":  # the centre and one point on the circle
        (cx, cy), (px, py) = _points(json_path, index, shape, 2)[:2]
        r = math.hypot(px - cx, py - cy)
        n = max(16, int(math.ceil(2 * math.pi * r / 2)))  # a vertex every ~2 px: rasterises like the circle
        a = np.linspace(0, 2 * math.pi, n, endpoint=False)
        return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1).flatten().tolist()
    if kind == "mask":
        return _labelme_mask(json_path, index, shape, height, width)
    return None


def read_labelme_folder(folder, class_names=None, why="not in --classes"):
    """A labelme folder as a COCO instances dict (each image also has ``path``, the file found).

    ``class_names``: the classes in this order, other labels dropped (one note line per label,
    saying ``why``);
    None: every label, sorted. Shapes of one image with the same label and ``group_id`` are one
    object. Shapes without area (line, point, ...) are skipped with one warning line per kind.
    """
    files = _json_files(folder)
    docs, coco_files, others = [], [], []
    for path in files:
        doc = _read_json(path)
        if isinstance(doc, dict) and isinstance(doc.get("shapes"), list):
            docs.append((path, doc))
        elif isinstance(doc, dict) and all(k in doc for k in ("images", "annotations", "categories")):
            coco_files.append(path)
        else:
            others.append(path)
    if docs and coco_files:
        raise DatasetError(f"{folder}: holds both labelme JSONs ({len(docs)}, e.g. {os.path.basename(docs[0][0])}) "
                           f"and a COCO file ({coco_files[0]}): pass the COCO file itself as --data-path, or move it "
                           f"out of the folder to train on the labelme files.")
    if not docs:
        yamls = sorted(f for f in os.listdir(folder) if is_yolo_file(f))
        found = f" (its JSON files are a COCO file, {coco_files[0]}: pass that file as --data-path)" if coco_files \
            else f" (for a YOLO dataset pass its {os.path.join(folder, yamls[0])})" if yamls \
            else f" ({len(files)} JSON file(s), none with \"shapes\")" if files else ""
        raise DatasetError(f"{folder}: no labelme JSON files{found}. --data-path takes a folder of labelme JSONs "
                           f"beside their images, a COCO file (.json), a YOLO data.yaml or a Penn-Fudan folder.")
    notes, warnings = KindLines(folder, "note", "", "", 3), KindLines(folder, "warning", "", "", 3)
    for path in others:
        notes.add("JSON file(s) without labelme \"shapes\" not read", os.path.relpath(path, folder))
    images, objects, used = [], [], set()
    for image_id, (path, doc) in enumerate(docs, 1):
        image = _labelme_image(path, doc)
        width, height = _image_size(image, path)
        said = (doc.get("imageWidth"), doc.get("imageHeight"))
        if all(isinstance(v, int) for v in said) and said != (width, height):
            raise DatasetError(f"{path}: imageWidth x imageHeight is {said[0]}x{said[1]}, but its image {image} is "
                               f"{width}x{height} pixels (upright). Annotate this image again in labelme.")
        images.append(dict(id=image_id, file_name=os.path.relpath(image, folder) if not image.startswith(
            _EMBEDDED.get("dir", "\0")) else os.path.relpath(path, folder), width=width, height=height, path=image))
        groups = {}
        for index, shape in enumerate(doc["shapes"]):
            if not isinstance(shape, dict) or not isinstance(shape.get("label"), str) or not shape["label"]:
                raise DatasetError(f"{path}: shape {index} has no \"label\" text. Fix it in labelme or delete it.")
            part = _shape_part(path, index, shape, height, width)
            where = f"{os.path.relpath(path, folder)} shape {index}"
            if part is None:
                warnings.add(f"{shape.get('shape_type')} shape(s) skipped (no area to learn from)", where)
                continue
            group = shape.get("group_id")
            key = (shape["label"], group) if group is not None else (shape["label"], "shape", index)
            groups.setdefault(key, dict(label=shape["label"], where=where, parts=[]))["parts"].append(part)
        for obj in groups.values():
            objects.append((image_id, obj, height, width))
            used.add(obj["label"])
    paired = {}
    for im, (path, _) in zip(images, docs):
        if not im["path"].startswith(_EMBEDDED.get("dir", "\0")):  # one image, two JSONs: which labels hold?
            first = paired.setdefault(os.path.realpath(im["path"]), path)
            if first != path:
                raise DatasetError(f"{path}: annotates {im['path']}, as {first} does; the image would be in the data "
                                   f"twice, with different labels. Delete one JSON or point its imagePath elsewhere.")
    for here, dirs, names in os.walk(folder):  # images labelme saved no JSON for: not annotated, so not used
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            full = os.path.join(here, name)
            if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.realpath(full) not in paired:
                notes.add("image(s) without a labelme JSON not used (save an empty one in labelme to train on it as "
                          "a negative)", os.path.relpath(full, folder))
    if class_names is not None and used and not used & set(class_names):
        raise DatasetError(f"{folder}: none of its labels ({', '.join(sorted(used))}) is one of the classes "
                           f"{', '.join(class_names)} ({why}); nothing would be left to learn or score. Check the "
                           f"spelling{' of --classes' if why == 'not in --classes' else ''}, or the folder.")
    twins = {}
    for label in used:  # "cat" and "Cat " are two classes: almost always a slip in labelme
        twins.setdefault(label.strip().casefold(), []).append(label)
    for group in sorted(g for g in twins.values() if len(g) > 1):
        for label in sorted(group):
            warnings.add("labels that differ only in case or spaces, each a class of its own (rename them in labelme "
                         "to merge them)", repr(label))
    labels = sorted(used) if class_names is None else list(class_names)
    category = {name: k + 1 for k, name in enumerate(labels)}
    annotations, dropped = [], {}
    for image_id, obj, height, width in objects:
        if obj["label"] not in category:
            dropped.setdefault(obj["label"], []).append(obj["where"])
            continue
        annotations.append(_annotation(obj["where"], image_id, category[obj["label"]], obj["parts"], height, width))
    for label, places in dropped.items():
        notes.kinds[f"object(s) labelled \"{label}\" left out ({why})"] = places
    warnings.print()
    notes.print()
    return dict(images=images, annotations=annotations,
                categories=[dict(id=k + 1, name=name) for k, name in enumerate(labels)])


# ---------------------------------------------------------------------------------------
# YOLO (Ultralytics): data.yaml naming image folders; labels/*.txt beside images/
# ---------------------------------------------------------------------------------------

def read_yolo_yaml(path):
    """``(names {id: name}, {split: [folder or list file]}, root)`` of a data.yaml, checked."""
    import yaml  # only YOLO data needs it

    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read it ({e.strerror or e}).") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise DatasetError(f"{path}: invalid YAML{at} ({getattr(e, 'problem', None) or e}). Fix the file.") from None
    if not isinstance(doc, dict):
        raise DatasetError(f"{path}: not a YOLO data file (a mapping with path, train, val and names).")
    names = doc.get("names")
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise DatasetError(f"{path}: no \"names\" (the class names, a list or {{id: name}}). Add them, e.g. "
                           f"names: [cat, dog].")
    if not all(isinstance(k, int) and k >= 0 for k in names):
        raise DatasetError(f"{path}: \"names\" keys {sorted(map(str, names))} are not class ids 0, 1, ...")
    if "kpt_shape" in doc:  # pose labels: box + keypoints per line, which would read as a polygon
        raise DatasetError(f"{path}: a pose dataset (kpt_shape {doc['kpt_shape']}); keypoints are not supported "
                           f"here. Train on box or polygon (segmentation) labels.")
    if "nc" in doc and doc["nc"] != len(names):
        raise DatasetError(f"{path}: nc is {doc['nc']!r} but \"names\" has {len(names)} classes. Make them agree "
                           f"(nc a whole number).")
    if len({str(n) for n in names.values()}) < len(names):
        raise DatasetError(f"{path}: \"names\" repeats a name ({list(names.values())}); give each class its own.")
    here = os.path.dirname(os.path.abspath(path))
    root = doc.get("path")
    if root in (None, ""):
        root = here
    else:  # relative to the YAML's folder (Ultralytics uses its datasets_dir setting; there is none here)
        places = [os.path.join(here, str(root)), os.path.abspath(str(root))]
        root = next((p for p in places if os.path.isdir(p)), None)
        if root is None:
            raise DatasetError(f"{path}: path {doc['path']!r} is not a folder; looked for "
                               f"{' and '.join(dict.fromkeys(places))}. Fix \"path\" (relative to the YAML's folder).")
    if not doc.get("train"):
        raise DatasetError(f"{path}: no \"train\" (the training images: a folder, a list of folders or a .txt).")
    splits = {}
    for key in ("train", "val", "test"):
        value = doc.get(key)
        if not value:
            continue
        entries = []
        for item in value if isinstance(value, list) else [value]:
            item = str(item)
            places = [os.path.normpath(os.path.join(root, item))]
            if item.startswith("../"):  # Roboflow writes ../train/images beside the YAML; Ultralytics tries both
                places.append(os.path.normpath(os.path.join(root, item[3:])))
            found = next((p for p in places if os.path.exists(p)), None)
            if found is None and key == "test":  # Roboflow writes test: even for exports without one
                print(f"note: {path}: test {item!r} not found ({' and '.join(places)}): not used")
                continue
            if found is None:
                raise DatasetError(f"{path}: {key} {item!r} not found; looked for {' and '.join(places)}. Fix "
                                   f"\"{key}\" (relative to {root}).")
            entries.append(found)
        if entries:
            splits[key] = entries
    return {int(k): str(v) for k, v in names.items()}, splits, os.path.normpath(root)


def _split_images(entries, yaml_path, key, notes):
    """The images of one split: folders searched recursively, .txt files listing images."""
    images = []
    for entry in entries:
        if os.path.isdir(entry):
            for here, dirs, files in os.walk(entry):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    full = os.path.join(here, f)
                    if f.lower().endswith(IMAGE_EXTENSIONS):
                        images.append(full)
                    elif not f.startswith(".") and not f.lower().endswith(".txt"):
                        notes.add(f"file(s) in {key} that are not images ({', '.join(IMAGE_EXTENSIONS)}) not used",
                                  os.path.relpath(full, entry))
        elif entry.lower().endswith(".txt"):
            with open(entry, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    line = line.strip()
                    if line:
                        full = os.path.normpath(os.path.join(os.path.dirname(entry), line))
                        if not os.path.isfile(full):
                            raise DatasetError(f"{entry}: line {n}: image {line} not found ({full}). Fix the list.")
                        images.append(full)
        elif entry.lower().endswith(IMAGE_EXTENSIONS):
            images.append(entry)
        else:
            raise DatasetError(f"{yaml_path}: {key} {entry} is neither a folder, an image nor a .txt list of images.")
    if not images:
        raise DatasetError(f"{yaml_path}: no images in {key} ({', '.join(entries)}); extensions read: "
                           f"{', '.join(IMAGE_EXTENSIONS)}.")
    return list(dict.fromkeys(images))


def label_path(image_path):
    """The YOLO rule: the last ``/images/`` of the path becomes ``/labels/``, the suffix ``.txt``."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    head, sep, tail = image_path.rpartition(sa)
    path = head + sb + tail if sep else image_path
    return os.path.splitext(path)[0] + ".txt"


def _label_file(image_path):
    """The label file of an image: the YOLO rule, else the ``.txt`` beside the image (Darknet's
    layout, or a folder named images above the dataset). None when neither exists."""
    beside = os.path.splitext(image_path)[0] + ".txt"
    return next((p for p in (label_path(image_path), beside) if os.path.isfile(p)), None)


def _yolo_objects(txt, names, width, height, warnings):
    """``[(line number, class id, flat polygon or None, box)]`` of one label file, checked."""
    objects, seen = [], set()
    try:
        with open(txt, encoding="utf-8-sig") as f:  # -sig: Windows editors start with a byte-order mark
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{txt}: cannot read this label file ({e}). Fix or remove it.") from None
    for n, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{txt}: line {n}"
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise DatasetError(f"{where}: {line.strip()[:60]!r} is not numbers (class id, then x y pairs).") from None
        cls = values[0]
        if not cls.is_integer() or int(cls) not in names:
            ids = f"{min(names)}..{max(names)}" if len(names) == max(names) - min(names) + 1 else \
                ", ".join(map(str, sorted(names)))
            raise DatasetError(f"{where}: class id {fields[0]} is not one of the YAML's names (ids "
                               f"{ids}). Fix the line or add the class to names.")
        coords = values[1:]
        if len(coords) % 2:
            raise DatasetError(f"{where}: {len(coords)} coordinates, an odd count; a line is a class id then x y "
                               f"pairs (4 numbers for a box cx cy w h, 6 or more for a polygon).")
        if len(coords) < 6 and len(coords) != 4:
            raise DatasetError(f"{where}: a polygon of {len(coords) // 2} point(s); it needs 3 or more (or 4 numbers "
                               f"for a box). Fix or delete the line.")
        bad = next((v for v in coords if not (-SLIGHTLY_OUTSIDE <= v <= 1 + SLIGHTLY_OUTSIDE)), None)
        if bad is None and any(not (-EPS <= v <= 1 + EPS) for v in coords):
            warnings.add("line(s) with a coordinate slightly outside 0..1, clipped to the image",
                         f"{os.path.basename(txt)} line {n}")
        if bad is not None:
            raise DatasetError(f"{where}: coordinate {bad:g} outside 0..1; YOLO labels are normalised by the image "
                               f"size ({width}x{height}). Divide x by the width and y by the height.")
        key = tuple(fields)
        if key in seen:  # a repeated object would count twice in the ground truth
            warnings.add("duplicate label line(s) dropped", f"{os.path.basename(txt)} line {n}")
            continue
        seen.add(key)
        coords = [min(max(v, 0.0), 1.0) for v in coords]
        if len(coords) == 4:
            cx, cy, w, h = coords
            box = [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]
            objects.append((n, int(cls), None, box))
        else:
            flat = [v * (width if i % 2 == 0 else height) for i, v in enumerate(coords)]
            xs, ys = flat[0::2], flat[1::2]
            objects.append((n, int(cls), flat, [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]))
    return objects


def read_yolo_split(yaml_path, key, entries, names, root):
    """One split of a YOLO dataset as a COCO instances dict (images also have ``path``); file
    names and the places in notes are relative to the dataset's ``root``."""
    notes, warnings = KindLines(yaml_path, "note", "", "", 3), KindLines(yaml_path, "warning", "", "", 3)
    images, annotations, negatives, boxes_in_masks = [], [], [], []
    found = _split_images(entries, yaml_path, key, notes)
    any_polygon = False
    pending, owner = [], {}
    for image_id, path in enumerate(found, 1):
        width, height = _image_size(path, yaml_path)
        images.append(dict(id=image_id, file_name=os.path.relpath(path, root), width=width, height=height,
                           path=path))
        txt = _label_file(path)
        if txt is not None:  # x.jpg and x.png beside each other would both take x.txt
            first = owner.setdefault(os.path.realpath(txt), path)
            if first != path:
                raise DatasetError(f"{yaml_path}: {first} and {path} share the label file {txt} (labels are paired "
                                   f"by file name without its extension). Rename or remove one of the images.")
        objects = _yolo_objects(txt, names, width, height, warnings) if txt is not None else []
        if not objects:
            negatives.append(os.path.relpath(path, root))
        for n, cls, flat, box in objects:
            any_polygon |= flat is not None
            pending.append((f"{os.path.relpath(txt, root)} line {n}", image_id, cls, flat, box,
                            height, width))
    if not owner:  # not one label file: the labels are somewhere else, not every image a negative
        first = found[0]
        looked = " and ".join(dict.fromkeys([label_path(first), os.path.splitext(first)[0] + ".txt"]))
        raise DatasetError(f"{yaml_path}: none of the {len(found)} image(s) in {key} has a label file; for "
                           f"{first} looked for {looked} (the last images/ folder of the path becomes labels/). "
                           f"Put the .txt files there.")
    for ann_id, image_id, cls, flat, box, height, width in pending:
        if flat is not None:
            area = _polygon_area([flat], height, width)
            annotations.append(dict(id=ann_id, image_id=image_id, category_id=cls, bbox=box, segmentation=[flat],
                                    iscrowd=0, area=area))
        else:
            if any_polygon:
                boxes_in_masks.append(ann_id)
            annotations.append(dict(id=ann_id, image_id=image_id, category_id=cls, bbox=box, iscrowd=0,
                                    area=box[2] * box[3]))
    if boxes_in_masks:  # Ultralytics would drop every polygon instead; here both are kept
        warnings.kinds[f"box line(s) in {key} among polygon lines: each box is used as its mask (for boxes only, "
                       f"--model fasterrcnn)"] = boxes_in_masks
    if negatives:
        notes.kinds[f"image(s) in {key} without labels: used as negatives (no objects)"] = negatives
    warnings.print()
    notes.print()
    return dict(images=images, annotations=annotations,
                categories=[dict(id=k, name=names[k]) for k in sorted(names)])


# ---------------------------------------------------------------------------------------
# into the COCO route
# ---------------------------------------------------------------------------------------

def load_own_format(data_path, test_data_path=None, class_names=None, image_dir=None):
    """Entries of a labelme folder or a YOLO data.yaml, as ``load_coco_images`` returns them.

    Returns ``((entries, classes, has_masks), test)``; ``test`` is the same triple for the test
    set (a YOLO val/test split, or ``test_data_path``: another labelme folder), or None for the
    seeded hold-out of ``--test-size`` images.
    """
    if image_dir:
        raise DatasetError(f"--image-dir {image_dir}: applies to COCO files only; {data_path} says where its images "
                           f"are (labelme: imagePath beside each JSON; YOLO: the YAML's train/val folders).")
    if is_yolo_file(data_path):
        if class_names:
            raise DatasetError(f"--classes: applies to labelme folders only; {data_path} names its classes "
                               f"(\"names\"). Edit names there instead.")
        if test_data_path:
            raise DatasetError(f"--test-data-path {test_data_path}: a YOLO dataset's test set is its val split "
                               f"(or test); name it in {data_path} instead.")
        names, splits, root = read_yolo_yaml(data_path)
        train = load_coco_images(data_path, data=read_yolo_split(data_path, "train", splits["train"], names, root))
        held = "val" if "val" in splits else "test" if "test" in splits else None
        if held is None:
            print(f"note: {data_path}: no val or test split: holding out --test-size images of train")
            return train, None
        return train, load_coco_images(data_path, data=read_yolo_split(data_path, held, splits[held], names, root))
    train = load_coco_images(data_path, data=read_labelme_folder(data_path, class_names))
    if not test_data_path:
        return train, None
    if not is_labelme_folder(test_data_path):
        raise DatasetError(f"--test-data-path {test_data_path}: not a folder of labelme JSONs; with a labelme "
                           f"--data-path the test set is another labelme folder (or the --test-size hold-out).")
    # the test folder gets the training folder's classes, so labels 1..K mean the same in both
    names = class_names or [c["name"] for c in train[1]]
    why = "not in --classes" if class_names else f"not a label of {data_path}"
    return train, load_coco_images(test_data_path, data=read_labelme_folder(test_data_path, names, why))


def class_list(text):
    """``--classes a,b,c``: the names in order, each once."""
    import argparse

    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r}: an empty name; expected names separated by commas, e.g. cat,dog")
    if len(set(names)) < len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: a name given twice")
    return names
