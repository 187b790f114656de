"""The Pascal VOC reader: XML annotations (``torchvision.datasets.VOCDetection``'s format, as
LabelImg, CVAT and Roboflow export it) read into the in-memory COCO instances dict that
``finetune.data.coco.load_coco_images`` loads for a COCO file, so training, evaluation, the
per-class table, ``best.pth`` and --predict's class names work unchanged.

Two layouts: a VOC folder (``Annotations/*.xml``, ``JPEGImages/``, optionally
``ImageSets/Main/{train,trainval,val,test}.txt``) or a folder of XMLs each beside its image.
Boxes only (VOC has no instance outlines in its XMLs), so the box-only model trains; a
``difficult`` object is a crowd-like ignore region (``iscrowd: 1``), as the VOC evaluation
leaves it out. Every error names the XML (and its object), never the dict built from it.
"""

import math
import os
import xml.etree.ElementTree as ET

from finetune.data.coco import KindLines, check_label_names, load_coco_images
from finetune.data.image_files import IMAGE_EXTENSIONS, image_size
from finetune.errors import DatasetError

ANNOTATIONS, IMAGES, IMAGE_SETS = "Annotations", "JPEGImages", os.path.join("ImageSets", "Main")
_EXTENSIONS = IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS)
# The lists of ImageSets/Main that name a split, in the order they are preferred.
TRAIN_LISTS, HELD_LISTS = ("train", "trainval"), ("val", "test")
FIX = "Fix it in your annotation tool or export the folder again"


def _listed(folder, suffix):
    """The names in ``folder`` (not hidden) ending in ``suffix`` (any case), sorted; none if it is no folder."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(n for n in names if n.lower().endswith(suffix) and not n.startswith(".")
                  and os.path.isfile(os.path.join(folder, n)))


def _split_folders(path):
    """The subfolders of ``path`` that hold VOC XMLs and no JSON (Roboflow's train/ valid/ test/)."""
    subs = [os.path.join(path, d) for d in sorted(os.listdir(path)) if not d.startswith(".")]
    return [d for d in subs if os.path.isdir(d) and _listed(d, ".xml") and not _listed(d, ".json")]


def is_voc_folder(path):
    """A Pascal VOC folder: ``Annotations/`` or ``JPEGImages/`` in it, XML files in it (and no
    JSON: a labelme folder with a stray XML stays labelme), or subfolders of XMLs (one per split)."""
    if not os.path.isdir(path) or any(os.path.isdir(os.path.join(path, sub)) for sub in ("PNGImages", "PedMasks")):
        return False
    if any(os.path.isdir(os.path.join(path, sub)) for sub in (ANNOTATIONS, IMAGES)):
        return True
    if _listed(path, ".json"):
        return False
    return bool(_listed(path, ".xml")) or bool(_split_folders(path))


def _layout(folder, image_dir=None):
    """``(xml folder, image folders)``: Annotations/ and JPEGImages/ (then beside the XML), or the
    folder itself for XMLs beside their images; ``image_dir`` (--image-dir) alone, if given."""
    voc = os.path.isdir(os.path.join(folder, ANNOTATIONS))
    xml_dir = os.path.join(folder, ANNOTATIONS) if voc else folder
    if not _listed(xml_dir, ".xml"):
        splits = _split_folders(folder)
        hint = f" Its subfolders {', '.join(os.path.basename(s) + '/' for s in splits)} hold XMLs: pass the " \
               f"training one as --data-path and another as --test-data-path." if splits else \
            " A VOC folder has Annotations/*.xml beside JPEGImages/, or each XML beside its image."
        raise DatasetError(f"{folder}: no Pascal VOC XML files in {xml_dir}.{hint}")
    if image_dir:
        return xml_dir, [image_dir]
    images = os.path.join(folder, IMAGES)
    return xml_dir, [images, xml_dir] if os.path.isdir(images) else [xml_dir]


def _parse(path):
    """The root element of one VOC XML, checked to be ``<annotation>``."""
    try:
        root = ET.parse(path).getroot()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read it ({e.strerror or e}).") from None
    except (ET.ParseError, ValueError, LookupError) as e:  # LookupError: an unknown encoding declared
        raise DatasetError(f"{path}: invalid XML ({str(e).splitlines()[0][:100]}). Save it again in your "
                           f"annotation tool or move it out of the folder.") from None
    if root.tag != "annotation":
        cvat = " (CVAT's \"CVAT for images\" format: export \"Pascal VOC\" or COCO instead)" \
            if root.tag == "annotations" else ""
        raise DatasetError(f"{path}: not a Pascal VOC annotation: its root element is <{str(root.tag)[:40]}>, not "
                           f"<annotation>{cvat}. Export the annotations as Pascal VOC or move the file out of the "
                           f"folder.")
    return root


def _text(element, tag):
    """The stripped text of ``element``'s child ``tag``; None when there is none (or it is empty)."""
    child = element.find(tag)
    text = child.text.strip() if child is not None and child.text else ""
    return text or None


def _number(path, where, tag, text):
    """``text`` (the field ``tag``) as a finite float, else an error naming the XML and ``where``."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        shown = repr(text) if text is None or len(text) <= 30 else repr(text[:27] + "...")
        raise DatasetError(f"{path}: {where}: <{tag}> is {shown}, not a (finite) number. {FIX}.")
    return value


def _size(path, root):
    """``(width, height)`` from ``<size>``; None when it is missing or 0 (some exporters write 0:
    the image's own size is used)."""
    size = root.find("size")
    if size is None or (_text(size, "width") is None and _text(size, "height") is None):
        return None
    for tag in ("width", "height"):
        if _text(size, tag) is None:
            raise DatasetError(f"{path}: <size> has no <{tag}>. {FIX}.")
    width, height = (_number(path, "<size>", tag, _text(size, tag)) for tag in ("width", "height"))
    if width == 0 and height == 0:
        return None
    if width < 1 or height < 1 or not width.is_integer() or not height.is_integer():
        raise DatasetError(f"{path}: <size> is {width:g}x{height:g}; width and height are whole numbers of pixels "
                           f">= 1. {FIX}.")
    return int(width), int(height)


def _difficult(path, where, obj):
    """``<difficult>`` as 0 or 1 (absent: 0; ``true``/``false`` as some tools write it)."""
    text = (_text(obj, "difficult") or "0").lower()
    value = {"true": 1, "false": 0}.get(text)
    if value is None:
        number = _number(path, where, "difficult", text)
        value = int(number) if number in (0, 1) else None
    if value is None:
        raise DatasetError(f"{path}: {where}: <difficult> is {text!r}; expected 0 or 1. {FIX}.")
    return value


def _objects(path, root):
    """The objects of one XML as ``dict(name, difficult, box (xmin, ymin, xmax, ymax) as written, index)``."""
    objects = []
    for index, obj in enumerate(root.findall("object"), 1):
        name = " ".join((_text(obj, "name") or "").split()) or None  # pretty-printed XML: "\n\t\tdog\n"
        if name is None:
            raise DatasetError(f"{path}: object {index} has no <name>. {FIX}.")
        where = f"object {index} (\"{name[:40]}\")"
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DatasetError(f"{path}: {where} has no <bndbox> (only boxes are read). {FIX}.")
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            if _text(bndbox, tag) is None:
                raise DatasetError(f"{path}: {where}: <bndbox> has no <{tag}>. {FIX}.")
        box = tuple(_number(path, where, tag, _text(bndbox, tag)) for tag in ("xmin", "ymin", "xmax", "ymax"))
        objects.append(dict(name=name, difficult=_difficult(path, where, obj), box=box, index=index))
    return objects


def _image_places(xml_path, file_name, image_dirs):
    """Where the image of an XML may be, in order: ``file_name`` in each folder, then its stem and
    the XML's stem with any image extension (exporters rename a .png to .jpg in <filename>)."""
    stems = dict.fromkeys([os.path.splitext(file_name)[0], os.path.splitext(os.path.basename(xml_path))[0]])
    places = []
    for folder in image_dirs:
        places.append(os.path.join(folder, file_name))
        places += [os.path.join(folder, stem + ext) for stem in stems for ext in _EXTENSIONS]
    return [p for p in dict.fromkeys(places) if p != xml_path]  # (<filename> naming the XML itself)


def _read_xml(folder, xml_path, image_dirs):
    """One XML: its image (``path`` found, or None, with the ``places`` looked), size and objects."""
    root = _parse(xml_path)
    stem = os.path.splitext(os.path.basename(xml_path))[0]
    file_name = (_text(root, "filename") or "").replace("\\", "/")
    file_name = os.path.basename(file_name) or stem + ".jpg"  # another machine's path: its last part here
    if not file_name.isprintable():
        raise DatasetError(f"{xml_path}: <filename> {file_name[:60]!r} holds control characters (a line break?). "
                           f"{FIX}.")
    places = _image_places(xml_path, file_name, image_dirs)
    found = next((p for p in places if os.path.isfile(p)), None)
    stem = os.path.splitext(file_name)[0]
    looked = [p for d in image_dirs for p in (os.path.join(d, file_name), os.path.join(d, stem + ".*"))]
    return dict(xml=xml_path, where=os.path.relpath(xml_path, folder), path=found, looked=looked,
                size=_size(xml_path, root), objects=_objects(xml_path, root))


def _checked_image(doc, notes):
    """``(width, height)`` of a found image as its XML says (``<size>``; missing or 0: the file's,
    with a note). A size that is not the file's, even turned, is an error naming the XML; a
    turned one is left to ``load_coco_images`` (EXIF orientation)."""
    upright = image_size(doc["path"], doc["xml"])
    if doc["size"] is None:
        notes.add("XML(s) without a <size> (or 0x0): the image file's size used", doc["where"])
        return upright
    if doc["size"] not in (upright, upright[::-1]):
        raise DatasetError(f"{doc['xml']}: <size> is {doc['size'][0]}x{doc['size'][1]}, but its image "
                           f"{doc['path']} is {upright[0]}x{upright[1]} pixels (upright). Fix <size> or annotate "
                           f"this image again.")
    return doc["size"]


def _check_found(folder, docs):
    """Refuse a folder none of whose images is found (naming where the first was looked for), and
    an image that two XMLs annotate; some missing are counted by ``load_coco_images``."""
    if docs and all(d["path"] is None for d in docs):
        also = f" (nor that of any of the other {len(docs) - 1} XMLs)" if len(docs) > 1 else ""
        raise DatasetError(f"{docs[0]['xml']}: its image is not found{also}; looked for "
                           f"{', '.join(docs[0]['looked'])}. Put the images in "
                           f"JPEGImages/ or beside the XMLs, or pass --image-dir FOLDER where they are.")
    owner = {}
    for d in docs:
        if d["path"] is not None:
            first = owner.setdefault(os.path.realpath(d["path"]), d["xml"])
            if first != d["xml"]:
                raise DatasetError(f"{d['xml']}: annotates {d['path']}, as {first} does; the image would be in the "
                                   f"data twice, with different labels. Delete one XML or fix its <filename>.")


def _box(obj, width, height, warnings, notes, where):
    """A COCO ``[x, y, w, h]`` from a VOC box (1-based pixels: the first column is 1), or None
    (no size, dropped with a warning). A 0 where VOC counts from 1 (0-based exporters) is read as
    the image's edge, with a note; boxes past the image are clipped by ``load_coco_images``."""
    xmin, ymin, xmax, ymax = obj["box"]
    if xmax <= xmin or ymax <= ymin:
        warnings.add("object(s) with xmax <= xmin or ymax <= ymin (no size), dropped", where)
        return None
    if 0 <= xmin < 1 or 0 <= ymin < 1:
        notes.add("object(s) with xmin or ymin below 1, where VOC counts pixels from 1 (a 0-based exporter): "
                  "read as the image's edge", where)
    x0 = max(xmin - 1, 0.0) if xmin >= 0 else xmin - 1
    y0 = max(ymin - 1, 0.0) if ymin >= 0 else ymin - 1
    return [x0, y0, xmax - x0, ymax - y0]


def _clipped_area(box, width, height):
    """The area of the ``[x, y, w, h]`` box inside the image (what COCO evaluation's area ranges see)."""
    x0, y0, x1, y1 = max(box[0], 0.0), max(box[1], 0.0), min(box[0] + box[2], width), min(box[1] + box[3], height)
    return max(x1 - x0, 0.0) * max(y1 - y0, 0.0)  # (none inside: load_coco_images drops the box)

def _coco_dict(folder, source, docs, labels, why, notes):
    """The COCO instances dict of the read XMLs ``docs`` (images also have ``path``), with the
    categories ``labels`` (1..K); objects of other names are left out, one note line per name.
    ``source``: what the warning lines name (the folder, or the list of its test split)."""
    warnings = KindLines(source, "warning", "", "", 3)
    category = {name: k + 1 for k, name in enumerate(labels)}
    images, annotations, dropped = [], [], {}
    for image_id, doc in enumerate(docs, 1):
        width, height = _checked_image(doc, notes) if doc["path"] else doc["size"] or (1, 1)
        path = doc["path"] or doc["looked"][0]  # missing: load_coco_images counts them (--skip-missing-images)
        images.append(dict(id=image_id, file_name=os.path.relpath(path, folder), width=width, height=height,
                           path=path))
        for obj in doc["objects"]:
            where = f"{doc['where']} object {obj['index']}"
            if obj["name"] not in category:
                dropped.setdefault(obj["name"], []).append(where)
                continue
            box = _box(obj, width, height, warnings, notes, where)
            if box is not None:
                annotations.append(dict(id=where, image_id=image_id, category_id=category[obj["name"]], bbox=box,
                                        iscrowd=obj["difficult"], area=_clipped_area(box, width, height)))
    for label, places in dropped.items():
        notes.kinds[f"object(s) named \"{label}\" left out ({why})"] = places
    warnings.print()
    return dict(images=images, annotations=annotations,
                categories=[dict(id=k + 1, name=name) for k, name in enumerate(labels)])


def _read_list(list_file, xml_dir):
    """The XMLs an ImageSets list names (one image id a line; a class list's ``id 1`` reads as ``id``)."""
    try:
        with open(list_file, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{list_file}: cannot read this image list ({e}). Fix or remove it.") from None
    paths = []
    for n, line in enumerate(lines, 1):
        if line.split():
            path = os.path.join(xml_dir, line.split()[0] + ".xml")
            if not os.path.isfile(path):
                raise DatasetError(f"{list_file}: line {n}: {line.split()[0]} has no annotation {path}. Fix the list "
                                   f"or restore the XML.")
            paths.append(path)
    if not paths:
        raise DatasetError(f"{list_file}: lists no image. Fill it or remove it.")
    return list(dict.fromkeys(paths))


def voc_splits(folder, xml_dir, held=True):
    """``(train XMLs, test XMLs or None, the test list's path or None)`` of a VOC folder, and prints which lists of
    ImageSets/Main are used as what: val.txt (else test.txt) is the test split and train.txt
    (else trainval.txt, less the test split) the training split; without a list every XML is
    trained on (and ``--test-size`` held out). ``held``: False where the test set is another
    folder (--test-data-path): the val and test lists are not read."""
    sets = os.path.join(folder, IMAGE_SETS)
    lists = {name: os.path.join(sets, name + ".txt") for name in TRAIN_LISTS + HELD_LISTS
             if os.path.isfile(os.path.join(sets, name + ".txt"))}
    every = [os.path.join(xml_dir, n) for n in _listed(xml_dir, ".xml")]
    train_name = next((n for n in TRAIN_LISTS if n in lists), None)
    held_name = next((n for n in HELD_LISTS if n in lists), None) if held else None
    test = _read_list(lists[held_name], xml_dir) if held_name else None
    train = _read_list(lists[train_name], xml_dir) if train_name else every
    listed = len(train)
    if test is not None:
        train = [p for p in train if p not in set(test)]  # trainval holds val: it is tested on, not trained on
    rel = {name: os.path.relpath(path, folder) for name, path in lists.items()}
    less = f", less the {listed - len(train)} also in {rel[held_name]}" if listed > len(train) else ""
    said = f"training on {rel[train_name]} ({len(train)} images{less})" if train_name else \
        f"training on {'the other' if test else 'all'} {len(train)} XMLs of {os.path.relpath(xml_dir, folder)}"
    tested = f", testing on {rel[held_name]} ({len(test)} images)" if test else \
        " (no val.txt or test.txt: holding out --test-size images)" if held and lists else ""
    unread = [rel[n] for n in lists if n not in (train_name, held_name)]
    if lists:
        print(f"note: {folder}: {said}{tested}" + (f"; {', '.join(unread)} not read" if unread else ""))
    if not train:
        raise DatasetError(f"{folder}: no XML left to train on ({rel.get(train_name, xml_dir)} is all in "
                           f"{rel[held_name]}). Give {os.path.join(IMAGE_SETS, 'train.txt')} the training images.")
    return train, test, lists[held_name] if test else None


def read_voc_folder(folder, class_names=None, why="not in --classes", image_dir=None, held=True):
    """A VOC folder as ``(train, test, test list)``: COCO instances dicts (``test`` None: no
    val/test list, or not ``held``) and the path of the list that made ``test``. ``class_names``:
    the classes in this order, other names left out (one note line per name, saying ``why``);
    None: every object name of the folder's read XMLs, sorted."""
    xml_dir, image_dirs = _layout(folder, image_dir)
    train_xmls, test_xmls, test_list = voc_splits(folder, xml_dir, held)
    docs = {path: _read_xml(folder, path, image_dirs) for path in train_xmls + (test_xmls or [])}
    notes, warnings = KindLines(folder, "note", "", "", 3), KindLines(folder, "warning", "", "", 3)
    used = {obj["name"] for d in docs.values() for obj in d["objects"]}
    check_label_names(folder, used, class_names, why, warnings, "object names", "rename them to merge them")
    warnings.print()
    labels = sorted(used) if class_names is None else list(class_names)
    if not labels:
        raise DatasetError(f"{folder}: none of its {len(docs)} XMLs has an <object>, so there is no class to learn. "
                           f"Annotate some objects, or check the folder.")
    parts = [(source, [docs[p] for p in xmls]) for source, xmls in ((folder, train_xmls), (test_list, test_xmls))
             if xmls is not None]
    for _, part in parts:
        _check_found(folder, part)
    dicts = [_coco_dict(folder, source, part, labels, why, notes) for source, part in parts]
    notes.print()
    return dicts[0], dicts[1] if len(dicts) > 1 else None, test_list


def load_voc(data_path, test_data_path=None, class_names=None, image_dir=None, reading=None):
    """``load_own_format`` for a VOC folder: ``((entries, classes, has_masks), test)``; ``test`` is
    its val/test list, ``test_data_path`` (another VOC folder, read with this one's classes), or
    None (the --test-size hold-out)."""
    if test_data_path and not is_voc_folder(test_data_path):
        raise DatasetError(f"--test-data-path {test_data_path}: not a Pascal VOC folder; with a VOC --data-path "
                           f"the test set is another VOC folder, its ImageSets/Main/val.txt, or the --test-size "
                           f"hold-out.")
    train, test, test_list = read_voc_folder(data_path, class_names, image_dir=image_dir, held=not test_data_path)
    train = load_coco_images(data_path, data=train, reading=reading)
    if test is not None:  # its lines name the list, so that they are told apart from the training split's
        return train, load_coco_images(test_list, data=test, reading=reading)
    if not test_data_path:
        return train, None
    # the test folder gets the training folder's classes, so labels 1..K mean the same in both
    names = class_names or [c["name"] for c in train[1]]
    why = "not in --classes" if class_names else f"not a name in {data_path}"
    test, _, _ = read_voc_folder(test_data_path, names, why, image_dir, held=False)
    return train, load_coco_images(test_data_path, data=test, reading=reading)
