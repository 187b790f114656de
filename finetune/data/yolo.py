"""The YOLO (Ultralytics) reader: a data.yaml and its splits' images and label files read into the
in-memory COCO instances dict that ``finetune.data.coco.load_coco_images`` loads for a COCO
file, so training, evaluation, the per-class table, ``best.pth`` and --predict's class names
work unchanged. Every error names the data.yaml or the label file (and its line), never the dict
built from them.
"""

import os
import sys

from finetune.data.coco import KindLines
from finetune.data.image_files import IMAGE_EXTENSIONS, image_size
from finetune.data.masks import ROUNDING, polygon_area
from finetune.errors import DatasetError

# exporters' rounding puts points a little outside the image (1.004, -0.002): clipped with a warning;
# beyond this the file is not normalised (pixel coordinates), an error
SLIGHTLY_OUTSIDE = 0.01  # normalised units


def is_yolo_file(path):
    return str(path).lower().endswith((".yaml", ".yml"))


def _load_yaml(path):
    """The parsed data.yaml at ``path``, refused unless it reads as a YAML mapping."""
    import yaml  # noqa: PLC0415 -- only YOLO data needs it

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
    return doc


def _yaml_names(path, doc):
    """The data.yaml's ``names`` as ``{id: name}``, checked (ids, nc, no repeats, no pose dataset)."""
    names = doc.get("names")
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise DatasetError(f"{path}: no \"names\" (the class names, a list or {{id: name}}). Add them, e.g. "
                           f"names: [cat, dog].")
    if not all(isinstance(k, int) and k >= 0 for k in names):
        raise DatasetError(f"{path}: \"names\" keys {sorted(map(str, names))} are not class ids 0, 1, ...")
    bad = next((k for k, name in names.items() if not _is_name(name)), None)
    if bad is not None:  # str() would make a class of None, a list or a 400-digit number
        quote = " (YAML reads an unquoted yes, no, on or off as true or false: quote the name)" \
            if isinstance(names[bad], bool) else ""
        raise DatasetError(f"{path}: \"names\" gives class {bad} the name {repr(names[bad])[:60]}; a class name is "
                           f"text (or a number){quote}. Fix names, e.g. names: [cat, dog].")
    if "kpt_shape" in doc:  # pose labels: box + keypoints per line, which would read as a polygon
        raise DatasetError(f"{path}: a pose dataset (kpt_shape {doc['kpt_shape']}); keypoints are not supported "
                           f"here. Train on box or polygon (segmentation) labels.")
    if "nc" in doc and doc["nc"] != len(names):
        raise DatasetError(f"{path}: nc is {doc['nc']!r} but \"names\" has {len(names)} classes. Make them agree "
                           f"(nc a whole number).")
    if len({str(n) for n in names.values()}) < len(names):
        raise DatasetError(f"{path}: \"names\" repeats a name ({list(names.values())}); give each class its own.")
    return names


def _is_name(value):
    """A class name: text, or a number a float holds (read as text, as the COCO reader reads category names)."""
    return isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                      and abs(value) <= sys.float_info.max)


def _yaml_root(path, doc):
    """The data.yaml's dataset folder: its ``path``, relative to the YAML's folder (default: that folder)."""
    here = os.path.dirname(os.path.abspath(path))
    root = doc.get("path")
    if root in (None, ""):
        return here
    # relative to the YAML's folder (Ultralytics uses its datasets_dir setting; there is none here)
    places = [os.path.join(here, str(root)), os.path.abspath(str(root))]
    root = next((p for p in places if os.path.isdir(p)), None)
    if root is None:
        raise DatasetError(f"{path}: path {doc['path']!r} is not a folder; looked for "
                           f"{' and '.join(dict.fromkeys(places))}. Fix \"path\" (relative to the YAML's folder).")
    return root


def _split_entries(path, root, key, value):
    """The folders or list files one split (``key``: train, val or test) names, each found under ``root``."""
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
    return entries


def read_yolo_yaml(path):
    """``(names {id: name}, {split: [folder or list file]}, root)`` of a data.yaml, checked."""
    doc = _load_yaml(path)
    names = _yaml_names(path, doc)
    root = _yaml_root(path, doc)
    if not doc.get("train"):
        raise DatasetError(f"{path}: no \"train\" (the training images: a folder, a list of folders or a .txt).")
    splits = {}
    for key in ("train", "val", "test"):
        value = doc.get(key)
        if not value:
            continue
        entries = _split_entries(path, root, key, value)
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
        # (past an edge by at most ROUNDING pixels: rounding, clipped without a word)
        if bad is None and any(not (-ROUNDING / side <= v <= 1 + ROUNDING / side)
                               for v, side in zip(coords, [width, height] * len(coords))):
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


def read_yolo_split(yaml_path, key, entries, names, root, masks=True):
    """One split of a YOLO dataset as a COCO instances dict (images also have ``path``); file
    names and the places in notes are relative to the dataset's ``root``. Without ``masks`` (a
    box-only model) box lines among polygon lines are not warned about."""
    notes, warnings = KindLines(yaml_path, "note", "", "", 3), KindLines(yaml_path, "warning", "", "", 3)
    images, annotations, negatives, boxes_in_masks = [], [], [], []
    found = _split_images(entries, yaml_path, key, notes)
    any_polygon = False
    pending, owner = [], {}
    for image_id, path in enumerate(found, 1):
        width, height = image_size(path, yaml_path)
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
            area = polygon_area([flat], height, width)
            annotations.append(dict(id=ann_id, image_id=image_id, category_id=cls, bbox=box, segmentation=[flat],
                                    iscrowd=0, area=area))
        else:
            if any_polygon:
                boxes_in_masks.append(ann_id)
            annotations.append(dict(id=ann_id, image_id=image_id, category_id=cls, bbox=box, iscrowd=0,
                                    area=box[2] * box[3]))
    if boxes_in_masks and masks:  # Ultralytics would drop every polygon instead; here both are kept
        warnings.kinds[f"box line(s) in {key} among polygon lines: each box is used as its mask (for boxes only, "
                       f"--model fasterrcnn)"] = boxes_in_masks
    if negatives:
        notes.kinds[f"image(s) in {key} without labels: used as negatives (no objects)"] = negatives
    warnings.print()
    notes.print()
    return dict(images=images, annotations=annotations,
                categories=[dict(id=k, name=names[k]) for k in sorted(names)])
