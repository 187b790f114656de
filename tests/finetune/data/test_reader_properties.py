"""Property-based tests of the COCO, labelme and YOLO readers (hypothesis).

Each test starts from a small valid dataset (24x16 PNGs) and mutates its structure and values:
wrong types in every field, huge, negative, zero and non-finite numbers, missing, extra and
duplicated items, odd-length polygons, broken RLEs, bad YOLO lines, labelme shapes of every type.
The property: the reader returns entries that satisfy the dataset contract (``check_contract``)
or raises a one-line ``DatasetError``; never another exception, never a warning line per item.

Runs are derandomized (the same examples every run). ``HYPOTHESIS_PROFILE=long`` runs many more,
and new ones each run; docs/tests.md says how.
"""

import base64
import contextlib
import copy
import io
import json
import math
import os
import re
import tempfile

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as coco_mask

from finetune.data import coco, formats, yolo
from finetune.data.masks import mask_to_rle
from finetune.errors import DatasetError

WIDTH, HEIGHT = 24, 16
# The readers' files are rewritten for every example: slow and large examples are the point.
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("ci", derandomize=True, max_examples=80, deadline=None, database=None,
                          suppress_health_check=HEALTH)
settings.register_profile("long", derandomize=False, max_examples=2000, deadline=None, database=None,
                          suppress_health_check=HEALTH)
# Set on each test (not loaded for the whole run): HYPOTHESIS_PROFILE=long picks the long one.
PROFILE = settings.get_profile("long" if os.environ.get("HYPOTHESIS_PROFILE") == "long" else "ci")
# What a user's warning line may hold: the file's path (pytest's temporary folders: ~70 characters here),
# a count, what happened and the first few places.
MAX_LINE = 300

# --- values a file may hold where another was expected ------------------------------------------

NUMBERS = st.one_of(
    st.sampled_from([0, 1, -1, 2, 3.0, 0.5, -0.0, -0.4, -0.6, 1.5, 8, 15.6, 16, 16.4, 16.6, 23.5, 24, 24.4, 24.6,
                     25.5, 30, 1e-7, 1e-300, 1e12, -1e12, 1e300, -1e300, 2 ** 64, 10 ** 400, math.nan, math.inf,
                     -math.inf]),
    st.integers(-40, 40), st.floats(-40, 40), st.floats(allow_nan=True, allow_infinity=True))
TEXTS = st.one_of(st.sampled_from(["", "a.png", "b.png", "cat", "dog", "1", "24", "polygon", "Ünïcode 猫", "💥",
                                   "..\\a.png", "/abs/a.png", "null", "0 0.5"]),
                  st.text(max_size=6))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXTS)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=6) | st.dictionaries(TEXTS, inner, max_size=3),
                      max_leaves=10)
POLYGONS = st.lists(st.lists(NUMBERS, max_size=9), max_size=3)  # odd lengths, too few points, huge values
RLE_TEXT = st.text(alphabet=[chr(c) for c in range(0x30, 0x70)], max_size=12)  # pycocotools' RLE characters
RLES = st.fixed_dictionaries({"size": st.one_of(st.just([HEIGHT, WIDTH]), st.just([WIDTH, HEIGHT]), VALUES),
                              "counts": st.one_of(st.lists(st.integers(-5, 400), max_size=5),
                                                  st.just([100, 50, 234]), RLE_TEXT, VALUES)})
BOXES = st.lists(NUMBERS, min_size=3, max_size=5)
# boxes in, across and beyond the image's edges, of every size down to none
NEAR_BOXES = st.tuples(st.floats(-8, WIDTH + 8), st.floats(-8, HEIGHT + 8), st.floats(-1, WIDTH + 4),
                       st.floats(-1, HEIGHT + 4)).map(list)
ANY_VALUE = st.one_of(VALUES, POLYGONS, RLES, BOXES)


def _paths(node, here=()):
    """Every place in a JSON-like tree (the root ``()`` first), as key paths."""
    yield here
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, here + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, here + (i,))


def _at(node, path):
    for key in path:
        node = node[key]
    return node


@st.composite
def mutated(draw, base, values=ANY_VALUE, least=1, most=3, keep_root=True):
    """``base`` after a few mutations at places drawn from the whole tree: a value replaced (by
    ``values``), a key or item deleted, an item duplicated (ids repeated), an extra key added."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(least, most))):
        paths = list(_paths(doc))[1 if keep_root else 0:]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        if not path:
            doc = copy.deepcopy(draw(values))  # (a copy: st.just's lists are shared between examples)
            continue
        parent, key = _at(doc, path[:-1]), path[-1]
        op = draw(st.sampled_from(["replace", "replace", "delete", "duplicate", "extra"]))
        if op == "replace":
            parent[key] = copy.deepcopy(draw(values))
        elif op == "delete":
            del parent[key]
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        elif op == "extra" and isinstance(parent[key], dict):
            parent[key][draw(TEXTS)] = copy.deepcopy(draw(values))
        elif op == "extra" and isinstance(parent[key], list):
            parent[key].append(copy.deepcopy(draw(values)))
    return doc


# --- the property ----------------------------------------------------------------------------------

def _kind(line):
    """A printed line without its numbers, quoted names and parenthesised places: what kind of line it is."""
    line = re.sub(r"\([^()]*\)", "()", line)
    line = re.sub(r"\"[^\"]*\"|'[^']*'", "''", line)
    return re.sub(r"\d+", "#", line)


def read_checked(read):
    """``read()``'s result, or None where it raised a one-line ``DatasetError``; any other exception
    propagates. What it printed: every line short, no kind of line printed twice (once per item)."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            result = read()
    except DatasetError as e:
        assert len(str(e).splitlines()) == 1, f"a DatasetError of several lines: {str(e)!r}"
        result = None
    lines = out.getvalue().splitlines()
    for line in lines:  # (a name holding a newline would split a line: its second part starts otherwise)
        assert line.startswith(("warning: ", "note: ")), f"a printed line that is no warning or note: {line!r}"
        assert len(line) <= MAX_LINE, f"a printed line of {len(line)} characters: {line[:400]!r}"
    # (a category renamed "name (id N)" is named on its own line: the per-class table shows the new name)
    kinds = [_kind(line) for line in lines if "shares the name" not in line]
    repeated = sorted({k for k in kinds if kinds.count(k) > 1})
    assert not repeated, f"a kind of line printed once per item: {repeated}\n" + "\n".join(lines)
    return result


def check_contract(result):
    """Entries as the training and the evaluation take them: boxes finite with positive size (in
    float32, as the model checks) inside their image, a label 1..K each, masks (N, H, W) for N
    boxes; the ground truth the evaluation builds rasterises every annotation at its image's size."""
    entries, classes, has_masks = result
    k = len(classes)
    assert k >= 1 and len({c["name"] for c in classes}) == k
    ds = coco.CocoFormatDataset(entries, classes, None, has_masks)
    for i, e in enumerate(entries):
        height, width = e["height"], e["width"]
        for a in e["anns"]:  # crowd regions too: the evaluation scores boxes against them
            x0, y0, x1, y1 = a["box"]
            assert all(math.isfinite(v) for v in a["box"]) and 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, a
            assert a["label"] in range(1, k + 1) and a["iscrowd"] in (0, 1), a
            assert math.isfinite(a["area"]) and a["area"] >= 0, a  # COCO evaluation ranks objects by area
        image, target = ds[i]
        assert image.shape == (3, height, width)
        boxes = target["boxes"].as_subclass(torch.Tensor)
        n = sum(not a["iscrowd"] for a in e["anns"])
        assert boxes.shape == (n, 4) and torch.isfinite(boxes).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all(), boxes  # torchvision's detectors refuse any other
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all(), boxes
        labels = target["labels"]
        assert labels.shape == (n,) and ((labels >= 1) & (labels <= k)).all()
        if has_masks:
            assert target["masks"].shape == (n, height, width)
    if entries:
        gt = coco.coco_ground_truth(entries, classes)
        for ann in gt.dataset["annotations"]:
            image = gt.imgs[ann["image_id"]]
            assert coco_mask.decode(gt.annToRLE(ann)).shape == (image["height"], image["width"])


def _png(colour):
    buffer = io.BytesIO()
    Image.new("RGB", (WIDTH, HEIGHT), colour).save(buffer, "PNG")
    return buffer.getvalue()


PNG = {"a.png": _png((90, 120, 30)), "b.png": _png((20, 40, 200)), "c.png": _png((200, 10, 10))}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One folder for the module's examples (each example writes a new folder of its own in it)."""
    return str(tmp_path_factory.mktemp("readers"))


def _example_dir(workdir):
    return tempfile.mkdtemp(dir=workdir, prefix="ex")


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(data, bytes):
        with open(path, "wb") as f:
            f.write(data)
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.write(data)


# --- COCO ------------------------------------------------------------------------------------------

def _mask_rle():
    m = np.zeros((HEIGHT, WIDTH), np.uint8)
    m[2:8, 14:20] = 1
    return mask_to_rle(m)


COCO_BASE = dict(
    images=[dict(id=1, file_name="a.png", width=WIDTH, height=HEIGHT),
            dict(id=2, file_name="b.png", width=WIDTH, height=HEIGHT)],
    annotations=[
        dict(id=1, image_id=1, category_id=1, bbox=[2, 3, 10, 8], area=80, iscrowd=0,
             segmentation=[[2, 3, 12, 3, 12, 11, 2, 11]]),
        dict(id=2, image_id=1, category_id=2, bbox=[14, 2, 6, 6], area=36, iscrowd=0, segmentation=_mask_rle()),
        dict(id=3, image_id=2, category_id=2, bbox=[0, 0, 24, 16], area=50, iscrowd=1,
             segmentation=dict(size=[HEIGHT, WIDTH], counts=[100, 50, 234])),
        dict(id=4, image_id=2, category_id=1, bbox=[5, 5, 6, 4], area=24, iscrowd=0),
    ],
    categories=[dict(id=1, name="cat", supercategory="animal"), dict(id=2, name="dog", supercategory="animal")])


def read_coco(workdir, doc):
    """``doc`` written as a COCO file in a folder of its own, read with its images in the module's shared folder."""
    here = _example_dir(workdir)
    images = os.path.join(workdir, "coco-images")
    if not os.path.isdir(images):
        for name, data in PNG.items():
            _write(os.path.join(images, name), data)
    path = os.path.join(here, "train.json")
    _write(path, json.dumps(doc))
    return read_checked(lambda: coco.load_coco_images(path, image_dir=images))


def test_the_coco_base_file_is_read_whole(workdir):
    entries, classes, has_masks = result = read_coco(workdir, COCO_BASE)
    check_contract(result)
    assert [len(e["anns"]) for e in entries] == [2, 2] and has_masks and [c["name"] for c in classes] == ["cat", "dog"]


@PROFILE
@given(doc=mutated(COCO_BASE))
def test_a_mutated_coco_file_is_read_or_refused_in_one_line(workdir, doc):
    result = read_coco(workdir, doc)
    if result is not None:
        check_contract(result)


@st.composite
def coco_annotation_values(draw):
    """The base file with the fields of one annotation (or one category) given generated values."""
    doc = copy.deepcopy(COCO_BASE)
    if draw(st.booleans()):  # the box alone, as box-only exports have it
        del doc["annotations"][0]["segmentation"]
    ann = draw(st.sampled_from(doc["annotations"]))
    # (mostly the values read as geometry; an id of another type is refused, tested once in a while)
    for key in draw(st.lists(st.sampled_from(["bbox", "segmentation", "iscrowd", "area"] * 3 + ["category_id", "id"]),
                             min_size=1, max_size=3, unique=True)):
        ann[key] = draw({"bbox": BOXES | st.lists(NUMBERS, min_size=4, max_size=4) | NEAR_BOXES,
                         "segmentation": st.one_of(POLYGONS, RLES, st.just([]), st.none()),
                         "iscrowd": st.sampled_from([0, 1, 2, True, None, "1", 1.0])}.get(key, SCALARS))
    if draw(st.integers(0, 3)) == 0:
        category = draw(st.sampled_from(doc["categories"]))
        category[draw(st.sampled_from(["name", "supercategory", "id"]))] = draw(VALUES)
    return doc


@PROFILE
@given(doc=coco_annotation_values())
def test_coco_annotation_values_are_read_or_refused_in_one_line(workdir, doc):
    result = read_coco(workdir, doc)
    if result is not None:
        check_contract(result)


# One annotation of each kind of fault the reader fixes or drops with a warning; the test gives
# several annotations the same fault, so a warning printed once per annotation would show.
COCO_FAULTS = {
    "nan box": dict(bbox=[math.nan, 1, 5, 5]),
    "zero box": dict(bbox=[3, 3, 0, 5]),
    "float noise box": dict(bbox=[12, 4, 1e-9, 8]),
    "box outside": dict(bbox=[20, 10, 10, 10]),
    "polygon a little outside": dict(bbox=[0, 1, 10, 7], segmentation=[[-0.8, 1, 10, 1, 10, 8]]),
    "polygon part too short": dict(bbox=[1, 1, 8, 8], segmentation=[[1, 1, 5, 5], [1, 1, 9, 1, 9, 9]]),
    "polygon nan": dict(bbox=[1, 1, 8, 8], segmentation=[[math.nan, 1, 9, 1, 9, 9], [1, 1, 9, 1, 9, 9]]),
    "empty segmentation": dict(bbox=[1, 1, 8, 8], segmentation=[]),
    "rle not covering": dict(bbox=[1, 1, 8, 8], segmentation=dict(size=[HEIGHT, WIDTH], counts=[1, 2])),
    "box disagreeing": dict(bbox=[0, 0, 3, 3], segmentation=[[10, 10, 20, 10, 20, 15]]),
    "crowd": dict(bbox=[0, 0, 24, 16], iscrowd=1, segmentation=dict(size=[HEIGHT, WIDTH], counts=[100, 284])),
    "no segmentation": dict(bbox=[2, 2, 5, 5]),
}


@PROFILE
@given(faults=st.lists(st.tuples(st.sampled_from(sorted(COCO_FAULTS)), st.sampled_from([1, 2]),
                                 st.sampled_from([1, 2])), min_size=1, max_size=12))
def test_many_coco_annotations_with_one_fault_give_one_line_per_kind(workdir, faults):
    doc = copy.deepcopy(COCO_BASE)
    for n, (fault, image_id, category_id) in enumerate(faults, 10):
        doc["annotations"].append(dict(dict(id=n, image_id=image_id, category_id=category_id, iscrowd=0),
                                       **copy.deepcopy(COCO_FAULTS[fault])))
    result = read_coco(workdir, doc)
    assert result is not None  # none of these faults is an error: each is fixed or dropped with a warning
    check_contract(result)


# --- labelme ---------------------------------------------------------------------------------------

def _mask_png(h, w):
    m = np.zeros((h, w), np.uint8)
    m[1:, 1:] = 255
    buffer = io.BytesIO()
    Image.fromarray(m).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


LABELME_BASE = [
    dict(version="5.2.1", flags={}, imagePath="a.png", imageData=None, imageHeight=HEIGHT, imageWidth=WIDTH, shapes=[
        dict(label="cat", points=[[2, 3], [12, 3], [12, 11], [2, 11]], group_id=None, shape_type="polygon", flags={}),
        dict(label="dog", points=[[14, 2], [20, 8]], group_id=None, shape_type="rectangle", flags={}),
        dict(label="cat", points=[[6, 8], [9, 8]], group_id=1, shape_type="circle", flags={}),
        dict(label="dog", points=[[1, 1], [5, 5]], group_id=None, shape_type="line", flags={}),
        dict(label="dog", points=[[15, 10], [19, 13]], group_id=None, shape_type="mask", flags={},
             mask=_mask_png(4, 5)),
    ]),
    # the image only as imageData (its imagePath is another machine's)
    dict(version="5.2.1", imagePath="gone\\b.png", imageData=base64.b64encode(PNG["b.png"]).decode(),
         imageHeight=HEIGHT, imageWidth=WIDTH, shapes=[
             dict(label="cat", points=[[3, 3], [9, 3], [6, 9]], group_id=2, shape_type="polygon"),
             dict(label="cat", points=[[12, 3], [18, 3], [15, 9]], group_id=2, shape_type="polygon"),
             dict(label="dog", points=[[20, 12]], group_id=None, shape_type="point"),
             dict(label="dog", points=[[1, 10], [4, 10], [4, 14], [1, 14]], shape_type="rotation"),
         ]),
]


def read_labelme(workdir, docs):
    """``docs`` written as a labelme folder (0.json, 1.json, ... beside a.png), read as --data-path reads it."""
    here = _example_dir(workdir)
    _write(os.path.join(here, "a.png"), PNG["a.png"])
    for i, doc in enumerate(docs if isinstance(docs, list) else [docs]):
        _write(os.path.join(here, f"{i}.json"), json.dumps(doc))
    return read_checked(lambda: formats.load_own_format(here)[0])


def test_the_labelme_base_folder_is_read_whole(workdir):
    entries, classes, has_masks = result = read_labelme(workdir, LABELME_BASE)
    check_contract(result)
    assert [len(e["anns"]) for e in entries] == [4, 2] and has_masks and [c["name"] for c in classes] == ["cat", "dog"]


@PROFILE
@given(docs=mutated(LABELME_BASE))
def test_a_mutated_labelme_folder_is_read_or_refused_in_one_line(workdir, docs):
    result = read_labelme(workdir, docs)
    if result is not None:
        check_contract(result)


def mostly(good, bad):
    """``good`` about 19 times in 20, else ``bad``: a shape with one wrong field is refused whole, so
    each wrong field comes now and then, and several good shapes meet in one file (their warnings too)."""
    return st.sampled_from([True] * 19 + [False]).flatmap(lambda ok: good if ok else bad)


SHAPE_TYPES = mostly(st.sampled_from(["polygon", "rectangle", "circle", "mask", "rotation"]),
                     st.sampled_from(["line", "point", "linestrip", "points", "cuboid", "", None, 5, ["polygon"]]))
# (points up to 0.9 px past an edge are clipped with a warning; further than 1 px, an error)
POINTS = mostly(st.lists(st.tuples(st.floats(-0.9, WIDTH + 0.9), st.floats(-0.9, HEIGHT + 0.9)).map(list),
                         min_size=3, max_size=6),
                st.one_of(st.lists(st.tuples(st.floats(-2, WIDTH + 2), st.floats(-2, HEIGHT + 2)).map(list),
                                   max_size=6),
                          st.lists(st.lists(NUMBERS, min_size=2, max_size=2), max_size=6),
                          st.lists(st.lists(NUMBERS, max_size=3), max_size=4), VALUES))
SHAPES = st.fixed_dictionaries(
    {"label": mostly(st.sampled_from(["cat", "dog", "Cat ", "猫"]), SCALARS), "points": POINTS,
     "shape_type": SHAPE_TYPES},
    optional={"group_id": mostly(st.one_of(st.none(), st.integers(0, 3)),
                                 st.one_of(st.just(1.5), st.just("g"), VALUES)),
              "mask": mostly(st.just(_mask_png(4, 5)), st.one_of(st.just(_mask_png(40, 40)), TEXTS, VALUES)),
              "flags": VALUES, "description": VALUES})


@PROFILE
@given(shapes=st.lists(SHAPES, min_size=1, max_size=8), image_size=mostly(
    st.just((WIDTH, HEIGHT)), st.sampled_from([(HEIGHT, WIDTH), (None, None), ("24", 16.0), (0, -1)])))
def test_generated_labelme_shapes_are_read_or_refused_in_one_line(workdir, shapes, image_size):
    doc = dict(LABELME_BASE[0], shapes=shapes, imageWidth=image_size[0], imageHeight=image_size[1])
    result = read_labelme(workdir, [doc, LABELME_BASE[1]])
    if result is not None:
        check_contract(result)


# --- YOLO ------------------------------------------------------------------------------------------

YOLO_BASE = dict(
    yaml=dict(path=".", train="images/train", val="images/val", names=["cat", "dog"]),
    labels={"train/a": [["0", "0.5", "0.5", "0.4", "0.5"], ["1", "0.1", "0.1", "0.3", "0.1", "0.2", "0.4"]],
            "train/b": [["1", "0.25", "0.5", "0.2", "0.2"]],
            "val/c": [["0", "0.5", "0.5", "0.5", "0.5"]]})
TOKENS = st.one_of(
    st.sampled_from(["0", "1", "2", "-1", "0.5", "1.0", "1.004", "-0.002", "1.02", "0", "0.0", "nan", "inf", "-inf",
                     "1e12", "1e300", "1e400", "1e-320", "0x1", "1_0", "１", "abc", "", "5", "0.9999999", "1e-9"]),
    st.floats(-0.1, 1.1).map(str), st.integers(-3, 5).map(str), TEXTS)
LINES = st.lists(st.lists(TOKENS, max_size=9), max_size=4)


def read_yolo(workdir, dataset):
    """``dataset`` (its data.yaml's dict, its label lines as token lists) written as a YOLO dataset
    of three images, read as --data-path reads it (``formats.load_own_format``), a split at a time
    (each prints its own lines): ``[train, held-out split or None]``, or None (refused)."""
    here = _example_dir(workdir)
    for split, name in (("train", "a"), ("train", "b"), ("val", "c")):
        _write(os.path.join(here, "images", split, f"{name}.png"), PNG[f"{name}.png"])
    labels = dataset.get("labels") if isinstance(dataset, dict) else None
    for key, lines in (labels.items() if isinstance(labels, dict) else []):
        if key in YOLO_BASE["labels"]:
            text = "\n".join(" ".join(map(str, line)) if isinstance(line, list) else str(line)
                             for line in (lines if isinstance(lines, list) else [lines]))
            _write(os.path.join(here, "labels", f"{key}.txt"), text + "\n")
    path = os.path.join(here, "data.yaml")
    _write(path, yaml.safe_dump(dataset.get("yaml") if isinstance(dataset, dict) else dataset, allow_unicode=True))
    found = read_checked(lambda: yolo.read_yolo_yaml(path))
    if found is None:
        return None
    names, splits, root = found
    held = "val" if "val" in splits else "test" if "test" in splits else None
    read = [read_checked(lambda key=key: coco.load_coco_images(
        path, data=yolo.read_yolo_split(path, key, splits[key], names, root))) for key in ("train", held) if key]
    return None if None in read else read + [None] * (2 - len(read))


def test_the_yolo_base_dataset_is_read_whole(workdir):
    (entries, classes, has_masks), test = read_yolo(workdir, YOLO_BASE)
    check_contract((entries, classes, has_masks))
    check_contract(test)
    assert [len(e["anns"]) for e in entries] == [2, 1] and has_masks and [c["name"] for c in classes] == ["cat", "dog"]


@PROFILE
@given(dataset=mutated(YOLO_BASE, values=st.one_of(VALUES, TOKENS, LINES)))
def test_a_mutated_yolo_dataset_is_read_or_refused_in_one_line(workdir, dataset):
    result = read_yolo(workdir, dataset)
    if result is not None:
        for split in result:
            if split is not None:
                check_contract(split)


@PROFILE
@given(lines=LINES, names=st.one_of(st.just(["cat", "dog"]), st.just({0: "cat", 2: "dog"}), st.just(["cat"]),
                                    st.lists(TEXTS, max_size=3), VALUES))
def test_generated_yolo_label_lines_are_read_or_refused_in_one_line(workdir, lines, names):
    dataset = copy.deepcopy(YOLO_BASE)
    dataset["yaml"]["names"] = names
    dataset["labels"]["train/a"] = lines
    result = read_yolo(workdir, dataset)
    if result is not None:
        for split in result:
            if split is not None:
                check_contract(split)
