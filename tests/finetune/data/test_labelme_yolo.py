"""Your own data as a labelme folder or a YOLO dataset: read into the same entries as a COCO file."""

import base64
import io
import json
import math
import os

import numpy as np
import pytest
import torch
from conftest import TINY, check_per_class, run_main
from PIL import Image
from test_arguments import cli

import tv_training
from finetune.data import coco, formats, labelme, synthetic
from finetune.errors import DatasetError

# The routes rasterise the same outlines differently (pycocotools polygons, labelme mask shapes,
# YOLO outlines traced on pixel corners): measured lowest mask IoU 1.000 (labelme) and 0.973 (YOLO).
MIN_IOU = dict(labelme=0.999, yolo=0.95)
MAX_BOX_DIFF = 1.0
# The COCO file's categories in id order (its "shapes" supercategory left out), the YAML's names.
COCO_NAMES = ["pedestrian", "ball", "sign"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """The same synthetic scenes as COCO files, labelme folders and a YOLO dataset. Seed 10 gives
    every class in train, polygons, pixel masks, a crowd region and images without objects."""
    root = tmp_path_factory.mktemp("formats")
    sizes = dict(num_train=4, num_val=2, seed=10, height_range=(64, 64), width_range=(80, 96))
    coco = synthetic.make_synthetic_coco(str(root / "coco"), **sizes)
    labelme = synthetic.make_synthetic_labelme(str(root / "labelme"), **sizes)
    yolo = synthetic.make_synthetic_yolo(str(root / "yolo"), **sizes)
    return dict(coco=coco, labelme=labelme, yolo=yolo)


def named_targets(entries, classes, has_masks=True):
    """Per image: [(class name, box, mask or None)] of the training targets (crowd regions are none)."""
    ds = coco.CocoFormatDataset(entries, classes, None, with_masks=has_masks)
    out = []
    for k in range(len(ds)):
        _, t = ds[k]
        masks = t["masks"] if "masks" in t else [None] * len(t["labels"])
        out.append([(classes[int(label) - 1]["name"], box, mask)
                    for label, box, mask in zip(t["labels"], t["boxes"].as_subclass(torch.Tensor), masks)])
    return out


def used_names(targets):
    return {n for objects in targets for n, _, _ in objects}


def one_line(info):
    return "\n" not in str(info.value)


# --- the same scenes through the three routes ------------------------------------------------

def test_the_three_formats_give_the_same_targets(scenes, capsys):
    coco_train, coco_val = scenes["coco"]
    want = {"train": named_targets(*coco.load_coco_images(coco_train)[:2]),
            "val": named_targets(*coco.load_coco_images(coco_val)[:2])}
    assert used_names(want["train"]) == set(COCO_NAMES)  # every class has objects in these scenes
    (labelme, labelme_val) = formats.load_own_format(*scenes["labelme"])
    (yolo, yolo_val) = formats.load_own_format(scenes["yolo"])
    assert [c["name"] for c in labelme[1]] == sorted(COCO_NAMES)  # labelme: the labels, sorted
    assert [c["name"] for c in labelme_val[1]] == sorted(COCO_NAMES)  # the test folder: train's classes
    assert [c["name"] for c in yolo[1]] == COCO_NAMES  # YOLO: the YAML's names, in their order
    assert labelme[2] and yolo[2]  # masks
    assert len(yolo_val[0]) == len(want["val"]) == 2  # the YAML's val split is the test set
    for fmt, got in (("labelme", {"train": labelme, "val": labelme_val}), ("yolo", {"train": yolo, "val": yolo_val})):
        ious = []
        for split in ("train", "val"):
            targets = named_targets(*got[split][:2])
            assert len(targets) == len(want[split])
            for objects_want, objects_got in zip(want[split], targets):
                assert [n for n, _, _ in objects_got] == [n for n, _, _ in objects_want], (fmt, split)
                for (_, box_w, mask_w), (_, box_g, mask_g) in zip(objects_want, objects_got):
                    assert float((box_w - box_g).abs().max()) <= MAX_BOX_DIFF, (fmt, split)
                    ious.append(float((mask_w & mask_g).sum() / (mask_w | mask_g).sum()))
        assert len(ious) > 10 and min(ious) >= MIN_IOU[fmt], fmt


# --- labelme -----------------------------------------------------------------------------------

def png_base64(array_or_image):
    buf = io.BytesIO()
    image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    image.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_labelme_shapes_groups_images_and_skipped_kinds(tmp_path, capsys):
    folder = tmp_path / "shots"
    (folder / "pics").mkdir(parents=True)
    (folder / "sub").mkdir()
    Image.new("RGB", (60, 40), (10, 20, 30)).save(folder / "pics" / "a.png")
    Image.new("RGB", (44, 33), (10, 20, 30)).save(folder / "pics" / "c.png")
    shape = dict(group_id=None, flags={}, description="")
    docs = {
        "a.json": dict(imagePath="pics\\a.png", imageData="bogus, never read: the file exists", shapes=[
            dict(shape, label="box", shape_type="rectangle", points=[[30, 20], [10, 5]]),  # corners in any order
            dict(shape, label="ball", shape_type="circle", points=[[40, 20], [40, 28]]),
            dict(shape, label="cat", shape_type="polygon", points=[[1, 1], [8, 1], [8, 8]], group_id=4),
            dict(shape, label="cat", shape_type="polygon", points=[[20, 30], [28, 30], [28, 38]], group_id=4),
            dict(shape, label="cat", shape_type="line", points=[[0, 0], [5, 5]]),
            dict(shape, label="cat", shape_type="point", points=[[3, 3]]),
            dict(shape, label="cat", shape_type="point", points=[[4, 4]]),
            dict(shape, label="cat", shape_type="linestrip", points=[[0, 0], [5, 5], [9, 2]]),
        ]),
        "b.json": dict(imagePath="gone.png", imageData=png_base64(Image.new("RGB", (50, 30), (30, 20, 10))), shapes=[
            dict(shape, label="blob", shape_type="mask", points=[[10, 10], [15, 14]],
                 mask=png_base64(np.full((5, 6), 255, np.uint8))),
        ]),
        os.path.join("sub", "c.json"): dict(imagePath="../pics/c.png", imageData=None, shapes=[
            dict(shape, label="ant", points=[[2, 2], [12, 2], [12, 9], [2, 9]]),  # labelme 3: no shape_type
        ]),
    }
    for name, doc in docs.items():
        (folder / name).write_text(json.dumps(dict(version="5.5.0", flags={}, **doc)))
    entries, classes, has_masks = coco.load_coco_images(
        str(folder), data=labelme.read_labelme_folder(str(folder)))
    lines = capsys.readouterr().out.splitlines()
    for kind, places in (("line", "a.json shape 4"), ("point", "a.json shape 5, a.json shape 6"),
                         ("linestrip", "a.json shape 7")):
        said = [line for line in lines if f" {kind} shape(s) skipped" in line]
        assert len(said) == 1 and said[0].startswith("warning: ") and f"({places})" in said[0], kind
    assert " 2 point shape(s)" in "".join(lines)  # one line per kind, with its count
    assert [c["name"] for c in classes] == ["ant", "ball", "blob", "box", "cat"] and has_masks  # sorted
    assert [(e["width"], e["height"]) for e in entries] == [(60, 40), (50, 30), (44, 33)]  # b: its imageData
    a, b, c = named_targets(entries, classes)
    assert len(a) == 3  # the two "cat" parts with one group_id are one object; no line or point object
    by_name = {n: (box.tolist(), mask) for n, box, mask in a}
    assert by_name["box"][0] == [10, 5, 30, 20] and int(by_name["box"][1].sum()) == 20 * 15
    assert by_name["ball"][0] == pytest.approx([32, 12, 48, 28], abs=0.5)  # radius 8 round (40, 20)
    assert abs(int(by_name["ball"][1].sum()) - math.pi * 64) < 0.1 * math.pi * 64
    cat_box, cat_mask = by_name["cat"]
    assert cat_box == [1, 1, 28, 38] and int(cat_mask[:10, :10].sum()) > 0 and int(cat_mask[28:, 18:].sum()) > 0
    assert int(cat_mask[12:26].sum()) == 0  # two parts, nothing between them
    (name, box, blob), = b
    assert name == "blob" and int(blob.sum()) == 30 and int(blob[10:15, 10:16].sum()) == 30
    assert box.tolist() == [10, 10, 16, 15]
    (name, box, _), = c
    assert name == "ant" and box.tolist() == [2, 2, 12, 9]


def test_classes_fix_the_order_and_leave_others_out(scenes, capsys):
    train_folder, _ = scenes["labelme"]
    data = labelme.read_labelme_folder(train_folder, ["sign", "pedestrian", "unicorn"])
    said = [line for line in capsys.readouterr().out.splitlines() if '"ball"' in line]
    assert len(said) == 1 and said[0].startswith("note: ") and 'labelled "ball" left out (not in --classes)' in said[0]
    entries, classes, _ = coco.load_coco_images(train_folder, data=data)
    assert [c["name"] for c in classes] == ["sign", "pedestrian", "unicorn"]  # unicorn: no object, AP -1
    assert used_names(named_targets(entries, classes)) == {"sign", "pedestrian"}


def test_classes_on_other_data_is_one_line(scenes, tmp_path):
    (tmp_path / "PennFudanPed" / "PNGImages").mkdir(parents=True)
    for other in (scenes["coco"][0], scenes["yolo"], str(tmp_path / "PennFudanPed")):
        with pytest.raises(DatasetError, match="--classes: applies to labelme folders only") as info:
            formats.load_datasets(other, None, tv_training.get_transform, formats.DataSplit(1, None, 0),
                                  class_names=["ball"])
        assert other in str(info.value) and one_line(info)


def test_a_folder_of_labelme_files_and_a_coco_file_is_ambiguous(scenes, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in sorted(os.listdir(scenes["labelme"][0]))[:4]:
        (folder / name).write_bytes(open(os.path.join(scenes["labelme"][0], name), "rb").read())
    (folder / "instances.json").write_text(open(scenes["coco"][0]).read())
    with pytest.raises(DatasetError) as info:
        labelme.read_labelme_folder(str(folder))
    assert "both labelme JSONs" in str(info.value) and str(folder / "instances.json") in str(info.value)
    assert "pass the COCO file itself as --data-path, or move it" in str(info.value) and one_line(info)


@pytest.mark.parametrize("change, words", [
    ("two_points", 'a.json: shape 0 (polygon "cat"): 2 point(s); a polygon needs 3 or more'),
    ("one_corner", 'a.json: shape 0 (rectangle "cat"): 1 point(s); a rectangle needs 2'),
    ("no_label", "a.json: shape 0 has no \"label\" text"),
    ("missing_image", "a.json: its image is missing; looked for"),
    ("invalid_json", "a.json: invalid JSON at line 1, column 2"),
    ("not_utf8", "a.json: not UTF-8 text"),
    ("empty_folder", "no labelme JSON files. --data-path takes"),
    # pycocotools walks every polygon edge pixel by pixel: 1e12 was a segmentation fault
    ("point_far_outside", 'a.json: shape 0 (polygon "cat"): "points" has the point (1e+12, 1), far outside the 30x20 '
                          'image (more than 1% of its size past an edge). Fix the shape in labelme or delete it.'),
    ("point_huge_integer", 'shape 0 (polygon "cat"): "points" has the point (10000... (401 digits), 1), far outside'),
    ("circle_far_outside", 'a.json: shape 0 (circle "cat"): "points" has the point (5, -1e+12), far outside the 30x20'),
    ("points_dict", 'a.json: shape 0 (polygon "cat"): "points" is not a list of [x, y] numbers'),
    ("label_list", 'a.json: shape 0 has no "label" text'),
    ("shape_type_list", 'a.json: shape 0 ("cat"): "shape_type" is [\'polygon\']; expected text (polygon, rectangle, '
                        'circle, mask, ...). Fix the shape in labelme or delete it.'),
    ("group_id_list", 'a.json: shape 0 ("cat"): "group_id" is [1]; expected a number (or text), or null. Fix the '
                      'shape in labelme or delete it.'),
    ("group_id_dict", 'a.json: shape 0 ("cat"): "group_id" is {}; expected a number (or text), or null'),
])
def test_bad_labelme_data_is_one_line_naming_the_file(change, words, tmp_path):
    Image.new("RGB", (30, 20)).save(tmp_path / "a.png")
    shape = dict(label="cat", shape_type="polygon", points=[[1, 1], [9, 1], [9, 9]])
    if change == "two_points":
        shape["points"] = shape["points"][:2]
    elif change == "one_corner":
        shape.update(shape_type="rectangle", points=[[1, 1]])
    elif change == "no_label":
        shape["label"] = ""
    elif change == "point_far_outside":
        shape["points"][1][0] = 1e12
    elif change == "point_huge_integer":  # more than a float holds
        shape["points"][1][0] = 10 ** 400
    elif change == "circle_far_outside":
        shape.update(shape_type="circle", points=[[5, 5], [5, -1e12]])
    elif change == "points_dict":
        shape["points"] = {"x": 1, "y": 2}
    elif change == "label_list":
        shape["label"] = ["cat"]
    elif change == "shape_type_list":
        shape["shape_type"] = ["polygon"]
    elif change.startswith("group_id_"):
        shape["group_id"] = [1] if change == "group_id_list" else {}
    doc = dict(imagePath="a.png", imageData=None, shapes=[shape])
    if change == "missing_image":
        os.remove(tmp_path / "a.png")
    if change == "not_utf8":
        (tmp_path / "a.json").write_bytes(b'{"shapes": ["\xff\xfe"]}')
    elif change != "empty_folder":
        (tmp_path / "a.json").write_text("{oops" if change == "invalid_json" else json.dumps(doc))
    with pytest.raises(DatasetError) as info:
        labelme.read_labelme_folder(str(tmp_path))
    assert words in str(info.value) and one_line(info)
    if change != "empty_folder":
        assert str(tmp_path / "a.json") in str(info.value)


def test_labelme_points_a_little_outside_the_image_are_clipped(tmp_path, capsys):
    Image.new("RGB", (30, 20)).save(tmp_path / "a.png")
    shapes = [dict(label="cat", shape_type="polygon", points=[[-0.5, 1], [30.8, 1], [9, 20.5]]),  # within 1 px
              dict(label="dog", shape_type="rectangle", points=[[31, 21], [20, 10]]),
              dict(label="ant", shape_type="polygon", points=[[0, 0], [30, 0], [30, 20]])]  # on the edges
    (tmp_path / "a.json").write_text(json.dumps(dict(imagePath="a.png", imageData=None, shapes=shapes)))
    data = labelme.read_labelme_folder(str(tmp_path))
    out = capsys.readouterr().out
    assert (f"warning: {tmp_path}: 2 shape(s) with points a little outside the image, clipped (a.json shape 0, a.json "
            f"shape 1)") in out
    anns = {a["id"]: a for a in data["annotations"]}
    assert anns["a.json shape 0"]["segmentation"] == [[0.0, 1.0, 30.0, 1.0, 9.0, 20.0]]
    assert anns["a.json shape 0"]["bbox"] == [0.0, 1.0, 30.0, 19.0]
    assert anns["a.json shape 1"]["bbox"] == [20.0, 10.0, 10.0, 10.0]
    assert anns["a.json shape 2"]["segmentation"] == [[0.0, 0.0, 30.0, 0.0, 30.0, 20.0]]
    entries, classes, _ = coco.load_coco_images(str(tmp_path), data=data)
    assert "reaching outside" not in capsys.readouterr().out  # the boxes come from the clipped points
    _, target = coco.CocoFormatDataset(entries, classes, None)[0]
    assert [int(m.sum()) for m in target["masks"]] == [a["area"] for a in data["annotations"]] == [283, 100, 300]


# --- YOLO ----------------------------------------------------------------------------------------

def yolo_dataset(root, label_text, yaml_text=None, extra_image=False):
    """One 40x20 image and its label file (and, with ``extra_image``, one without); returns the YAML's path."""
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    Image.new("RGB", (40, 20)).save(root / "images" / "train" / "x.png")
    if extra_image:
        Image.new("RGB", (40, 20)).save(root / "images" / "train" / "y.png")
    (root / "labels" / "train" / "x.txt").write_text(label_text)
    path = root / "data.yaml"
    path.write_text(yaml_text or "train: images/train\nnames: [cat, dog]\n")
    return str(path)


@pytest.mark.parametrize("names", ["[cat, dog]", "{0: cat, 1: dog}", "\n  1: dog\n  0: cat"])
def test_yolo_names_as_list_or_dict_and_a_negative(names, tmp_path, capsys):
    path = yolo_dataset(tmp_path, "1 0.1 0.1 0.4 0.1 0.4 0.9\n0 0.5 0.5 0.5 0.5\n",
                        f"train: images/train\nnames: {names}\n", extra_image=True)
    (entries, classes, has_masks), test = formats.load_own_format(path)
    out = capsys.readouterr().out
    assert test is None and "no val or test split: holding out --test-size images of train" in out
    assert [c["name"] for c in classes] == ["cat", "dog"] and has_masks
    x, y = named_targets(entries, classes)
    assert [(n, box.tolist()) for n, box, _ in x] == [("dog", [4, 2, 16, 18]), ("cat", [10, 5, 30, 15])]
    assert int(x[1][2].sum()) == 20 * 10  # the box line among polygon lines: its box is its mask
    assert y == []  # no label file: a negative
    assert "1 image(s) in train without labels: used as negatives (no objects) (images/train/y.png)" in out
    assert "1 box line(s) in train among polygon lines" in out


def test_yolo_box_only_data_has_no_masks(tmp_path, capsys):
    path = yolo_dataset(tmp_path, "0 0.5 0.5 0.5 0.5\n1 0.25 0.5 0.5 1\n")
    (entries, classes, has_masks), _ = formats.load_own_format(path)
    assert not has_masks
    targets = named_targets(entries, classes, has_masks)
    assert [(n, box.tolist(), mask) for n, box, mask in targets[0]] == \
        [("cat", [10, 5, 30, 15], None), ("dog", [0, 0, 20, 20], None)]


@pytest.mark.parametrize("label, yaml_text, words", [
    ("2 0.5 0.5 0.2 0.2\n", None, "x.txt: line 1: class id 2 is not one of the YAML's names (ids 0..1)"),
    ("0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.2 0.2 0.3\n", None, "x.txt: line 2: 5 coordinates, an odd count"),
    ("0 0.5 0.5 1.4 0.2\n", None, "x.txt: line 1: coordinate 1.4 outside 0..1"),
    ("0 0.1 0.1 0.2 0.2 0.3 0.3 0.1 0.4 0.2 0.4\n1 0.1 0.1\n", None, "x.txt: line 2: a polygon of 1 point(s)"),
    ("0 a b c d\n", None, "x.txt: line 1: '0 a b c d' is not numbers"),
    ("0 0.5 0.5 0.2 0.2\n", "train: images/train\n", "data.yaml: no \"names\""),
    ("0 0.5 0.5 0.2 0.2\n", "train: images/train\nnames: [a, b]\nnc: 3\n", "data.yaml: nc is 3 but \"names\" has 2"),
    ("0 0.5 0.5 0.2 0.2\n", "names: [a]\n", "data.yaml: no \"train\""),
    ("0 0.5 0.5 0.2 0.2\n", "train: [images/train\nnames: [a]\n", "data.yaml: invalid YAML at line"),
    ("0 0.5 0.5 0.2 0.2\n", "train: images/nowhere\nnames: [a]\n", "data.yaml: train 'images/nowhere' not found"),
    ("0 0.5 0.5 0.2 0.2\n", "train: labels/train\nnames: [a]\n", "data.yaml: no images in train"),
    ("1 0.5 0.5 0.2 0.2\n", "train: images/train\nnames: {0: a, 2: b}\n", "x.txt: line 1: class id 1 is not one "
                                                                           "of the YAML's names (ids 0, 2)"),
    ("0 0.5 0.5 0.2 0.2\n", "train: images/train\nnames: [a, b]\nnc: '2'\n", "data.yaml: nc is '2' but"),
    ("0 0.5 0.5 0.2 0.2 0.3 0.3 0.4 0.4 0.5 0.5\n", "train: images/train\nnames: [a]\nkpt_shape: [3, 2]\n",
     "data.yaml: a pose dataset (kpt_shape [3, 2]); keypoints are not supported"),
    ("0 0.5 0.5 1.02 0.2\n", None, "x.txt: line 1: coordinate 1.02 outside 0..1"),
])
def test_bad_yolo_data_is_one_line_naming_the_file(label, yaml_text, words, tmp_path):
    path = yolo_dataset(tmp_path, label, yaml_text)
    with pytest.raises(DatasetError) as info:
        formats.load_own_format(path)
    assert words in str(info.value) and one_line(info)
    named = str(tmp_path / "labels" / "train" / "x.txt") if words.startswith("x.txt") else path
    assert named in str(info.value)


def test_yolo_labels_beside_the_images_a_byte_order_mark_and_points_a_little_outside(tmp_path, capsys):
    # no labels/ folder: the .txt beside each image (Darknet's layout; also where a folder named
    # images above the dataset sends the YOLO rule outside it)
    root = tmp_path / "images" / "flat"
    (root / "train").mkdir(parents=True)
    Image.new("RGB", (400, 200)).save(root / "train" / "x.png")
    (root / "train" / "x.txt").write_bytes("\ufeff0 0.5 0.5 0.5 0.5\n1 0.2 0.2 1.004 0.2 1.004 0.9\n".encode())
    (root / "data.yaml").write_text("train: train\nnames: [cat, dog]\n")
    (entries, classes, _), _ = formats.load_own_format(str(root / "data.yaml"))
    out = capsys.readouterr().out
    assert "1 line(s) with a coordinate slightly outside 0..1, clipped to the image (x.txt line 2)" in out
    (cat, dog), = named_targets(entries, classes)
    assert cat[0] == "cat" and cat[1].tolist() == [100, 50, 300, 150]
    assert dog[0] == "dog" and dog[1].tolist() == [80, 40, 400, 180]  # x 1.004 clipped to the image's edge


def test_a_yolo_split_without_any_label_file_is_an_error_naming_where_it_looked(tmp_path):
    path = yolo_dataset(tmp_path, "0 0.5 0.5 0.2 0.2\n")
    os.remove(tmp_path / "labels" / "train" / "x.txt")
    with pytest.raises(DatasetError) as info:
        formats.load_own_format(path)
    want = (f"{path}: none of the 1 image(s) in train has a label file; for {tmp_path / 'images' / 'train' / 'x.png'} "
            f"looked for {tmp_path / 'labels' / 'train' / 'x.txt'} and {tmp_path / 'images' / 'train' / 'x.txt'}")
    assert str(info.value).startswith(want) and one_line(info)


def test_two_yolo_images_sharing_a_label_file_is_an_error(tmp_path):
    path = yolo_dataset(tmp_path, "0 0.5 0.5 0.2 0.2\n")
    Image.new("RGB", (40, 20), (9, 9, 9)).save(tmp_path / "images" / "train" / "x.jpg")
    with pytest.raises(DatasetError) as info:
        formats.load_own_format(path)
    images = tmp_path / "images" / "train"
    assert f"{images / 'x.jpg'} and {images / 'x.png'} share the label file" in str(info.value) and one_line(info)


def test_a_missing_yolo_test_split_is_left_out_when_val_is_there(tmp_path, capsys):
    path = yolo_dataset(tmp_path, "0 0.5 0.5 0.2 0.2\n",
                        "train: images/train\nval: images/train\ntest: ../test/images\nnames: [cat, dog]\n")
    (train, _, _), (val, _, _) = formats.load_own_format(path)
    assert len(train) == len(val) == 1
    assert f"note: {path}: test '../test/images' not found" in capsys.readouterr().out


def test_yolo_test_split_with_boxes_only_under_polygon_training_is_warned_about(tmp_path, capsys):
    path = yolo_dataset(tmp_path, "0 0.1 0.1 0.4 0.1 0.4 0.9\n",
                        "train: images/train\nval: images/val\nnames: [cat, dog]\n")
    (tmp_path / "images" / "val").mkdir()
    (tmp_path / "labels" / "val").mkdir()
    Image.new("RGB", (40, 20)).save(tmp_path / "images" / "val" / "v.png")
    (tmp_path / "labels" / "val" / "v.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    data = formats.load_datasets(path, None, tv_training.get_transform, formats.DataSplit(1, None, 0))
    assert data["has_masks"]
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert said == [f"warning: {path}'s val split: boxes only, while the training data has masks: segm AP would "
                    f"score the predicted masks against the boxes as rectangles. Give the test set polygons too, or "
                    f"train boxes only (--model fasterrcnn)."]
    # a box-only model scores boxes alone: nothing to warn about
    formats.load_datasets(path, None, tv_training.get_transform, formats.DataSplit(1, None, 0),
                          reading=coco.ReadOptions(masks=False))
    assert "warning:" not in capsys.readouterr().out


def test_a_yolo_yaml_with_val_and_test_says_which_it_tests_on(tmp_path, capsys):
    path = yolo_dataset(tmp_path, "0 0.5 0.5 0.2 0.2\n",
                        "train: images/train\nval: images/train\ntest: images/test\nnames: [cat, dog]\n")
    (tmp_path / "images" / "test").mkdir()
    Image.new("RGB", (40, 20)).save(tmp_path / "images" / "test" / "t.png")
    formats.load_datasets(path, None, tv_training.get_transform, formats.DataSplit(1, None, 0))
    out = capsys.readouterr().out
    assert f"note: {path}: testing on its val split; its test split (images/test) is not read" in out
    assert "test split:" not in out


def labelme_folder(folder, docs):
    """``{json name: (image name, [(label, points)])}`` as labelme files, with 40x30 images."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (image, shapes) in docs.items():
        if image and not (folder / image).exists():
            Image.new("RGB", (40, 30), (len(image), 5, 5)).save(folder / image)
        doc = dict(imagePath=image, imageData=None, shapes=[dict(label=label, shape_type="polygon", points=points)
                                                              for label, points in shapes])
        if image is None:
            del doc["imagePath"]
        (folder / name).write_text(json.dumps(doc))
    return str(folder)


TRIANGLE = [[1, 1], [9, 1], [9, 9]]


def test_labelme_classes_or_a_test_folder_matching_no_label_is_an_error(tmp_path):
    train = labelme_folder(tmp_path / "train", {"a.json": ("a.png", [("cat", TRIANGLE), ("dog", TRIANGLE)])})
    test = labelme_folder(tmp_path / "test", {"b.json": ("b.png", [("Cat", TRIANGLE)])})
    with pytest.raises(DatasetError) as info:
        formats.load_own_format(train, class_names=["cats", "dogs"])
    assert str(info.value).startswith(f"{train}: none of its labels (cat, dog) is one of the classes cats, dogs "
                                      f"(not in --classes)") and "spelling of --classes" in str(info.value)
    with pytest.raises(DatasetError) as info:
        formats.load_own_format(train, test)
    assert str(info.value).startswith(f"{test}: none of its labels (Cat) is one of the classes cat, dog (not a "
                                      f"label of {train})") and one_line(info)


def test_labelme_twins_rotation_shapes_and_images_found_by_the_json_name(tmp_path, capsys):
    folder = tmp_path / "shots"
    labelme_folder(folder, {"a.json": ("a.png", [("cat", TRIANGLE), ("Cat ", TRIANGLE)]),
                            "b.json": (None, [("cat", [[2, 2], [12, 4], [10, 12], [0, 10]])])})
    Image.new("RGB", (40, 30)).save(folder / "b.jpg")  # no imagePath: the image named as the JSON
    doc = json.loads((folder / "b.json").read_text())
    doc["shapes"][0]["shape_type"] = "rotation"  # X-AnyLabeling's rotated box: its four corners
    (folder / "b.json").write_text(json.dumps(doc))
    data = labelme.read_labelme_folder(str(folder))
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert said == [f"warning: {folder}: 2 labels that differ only in case or spaces, each a class of its own (rename "
                    f"them in labelme to merge them) ('Cat ', 'cat')"]
    assert [im["path"] for im in data["images"]] == [str(folder / "a.png"), str(folder / "b.jpg")]
    assert [c["name"] for c in data["categories"]] == ["Cat ", "cat"]
    rotated = data["annotations"][-1]
    assert rotated["bbox"] == [0, 2, 12, 10] and rotated["area"] > 80


def test_two_labelme_files_for_one_image_is_an_error(tmp_path):
    folder = labelme_folder(tmp_path / "shots", {"a.json": ("a.png", [("cat", TRIANGLE)]),
                                                 "a_copy.json": ("a.png", [("dog", TRIANGLE)])})
    with pytest.raises(DatasetError) as info:
        labelme.read_labelme_folder(folder)
    assert str(info.value).startswith(f"{tmp_path / 'shots' / 'a_copy.json'}: annotates {tmp_path / 'shots' / 'a.png'}"
                                      f", as {tmp_path / 'shots' / 'a.json'} does") and one_line(info)


# --- the command line ----------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["odd_count", "classes_on_yolo", "no_object", "output_among_images"])
def test_the_command_line_says_one_line_and_trains_nothing(case, tmp_path, capsys):
    label = {"odd_count": "0 0.5 0.5 0.2\n", "no_object": "\n"}.get(case, "0 0.5 0.5 0.2 0.2\n")
    path = yolo_dataset(tmp_path, label, extra_image=True)
    out = tmp_path / "images" / "train" / "run" if case == "output_among_images" else tmp_path / "run"
    extra = ["--classes", "cat"] if case == "classes_on_yolo" else []
    code, _, err = cli(["--data-path", path, "--weights", "none", "--output-dir", str(out), "-j", "0", "--test-size",
                        "0", "-b", "1", *extra], capsys)
    assert code == 1 and "Traceback" not in err
    said = [line for line in err.splitlines() if line.startswith("error:")]
    want = {"odd_count": f"error: {tmp_path / 'labels' / 'train' / 'x.txt'}: line 1: 3 coordinates, an odd count; a "
                         f"line is a class id then x y pairs (4 numbers for a box cx cy w h, 6 or more for a polygon).",
            "classes_on_yolo": f"error: --classes: applies to labelme folders only; {path} names its classes",
            "no_object": f"error: {path}: none of its 2 training image(s) holds an object, so there is nothing to "
                         f"learn.",
            "output_among_images": f"error: --output-dir {out}: inside {tmp_path / 'images' / 'train'}, the train "
                                   f"images of {path}"}[case]
    assert len(said) == 1 and said[0].startswith(want)
    assert not (out / "checkpoint.pth").exists()


# --- one tiny run per format ---------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["labelme", "yolo"])
def test_a_tiny_run_per_format_then_test_only_and_resume(fmt, scenes, one_thread, tmp_path, capsys):
    # labelme: --classes through the command line picks the order; YOLO: the YAML's names
    where = ["--data-path", scenes["yolo"]] if fmt == "yolo" else \
        ["--data-path", scenes["labelme"][0], "--test-data-path", scenes["labelme"][1], "--classes",
         "sign,pedestrian,ball"]
    out = str(tmp_path / "run")
    # the demo's small Mask R-CNN: the formats are what is tested, and it takes a fifth of the time
    result = run_main(*where, "--model", "maskrcnn_resnet18", "--weights", "none", "--output-dir", out,
                      "--min-size", str(TINY["min_size"]),
                      "--max-size", str(TINY["max_size"]), "--epochs", "1", "--train-size", "4", "-j", "0",
                      "-b", "2", "--print-freq", "50", "--aspect-ratio-group-factor", "0")
    names = COCO_NAMES if fmt == "yolo" else ["sign", "pedestrian", "ball"]
    bbox = list(result["bbox"].values())
    assert len(bbox) == 12 and all(isinstance(v, float) and math.isfinite(v) for v in bbox)
    assert len(result["segm"]) == 12  # masks: Mask R-CNN
    assert list(result["per_class"]) == names
    check_per_class(result)
    ckpt = os.path.join(out, "checkpoint.pth")
    # --test-only on the same data scores the checkpoint as the run's last evaluation did ...
    again = run_main("--test-only", "--weights", ckpt, *where, "--output-dir", "", "-j", "0")
    assert again["bbox"] == pytest.approx(result["bbox"], abs=1e-6) and list(again["per_class"]) == names
    # ... and --resume alone continues the run: the checkpoint knows its data, format and class order
    capsys.readouterr()
    resumed = run_main("--resume", ckpt, "--epochs", "2", "-j", "0")
    assert [r["epoch"] for r in resumed["records"]] == [0, 1] and list(resumed["per_class"]) == names
    if fmt == "labelme":  # the line naming what came from the checkpoint shows the flag as typed
        assert "--classes sign,pedestrian,ball" in capsys.readouterr().out
    if fmt == "labelme":  # --test-only takes the checkpoint's class order; another one typed is one line
        code, _, err = cli(["--test-only", "--weights", ckpt, "--data-path", scenes["labelme"][0], "--test-data-path",
                            scenes["labelme"][1], "--output-dir", "", "--classes", "pedestrian,sign,ball"], capsys)
        assert code == 1 and err.strip().endswith("another order: pass --classes sign,pedestrian,ball.")


# --- found by the property-based tests (tests/finetune/data/test_reader_properties.py) ---------

def test_a_yolo_box_of_float_noise_width_is_dropped_not_trained_on(tmp_path, capsys):
    """A box line of width 1e-9 was a box 0 px wide in float32, which torchvision's detectors refuse."""
    path = yolo_dataset(tmp_path, "0 0.5 0.5 1e-9 0.5\n1 0.25 0.5 0.5 1\n")
    (entries, classes, has_masks), _ = formats.load_own_format(path)
    assert "1 annotation(s) with a box of zero or negative size inside the image, dropped" in capsys.readouterr().out
    assert [(n, box.tolist()) for n, box, _ in named_targets(entries, classes, has_masks)[0]] == \
        [("dog", [0, 0, 20, 20])]


@pytest.mark.parametrize("names, words", [
    ("[cat, null]", "gives class 1 the name None; a class name is text (or a number). Fix names"),
    ("[cat, [a, b]]", "gives class 1 the name ['a', 'b']; a class name is text"),
    ("{0: cat, 1: no}", "gives class 1 the name False; a class name is text (or a number) (YAML reads an unquoted "
                        "yes, no, on or off as true or false: quote the name)"),
    (f"[cat, {10 ** 400}]", "gives class 1 the name 1000000000"),
])
def test_yolo_names_that_are_not_text_are_one_error(names, words, tmp_path):
    """str() made classes named "None", "['a', 'b']", "False" or a 400-digit number, silently."""
    path = yolo_dataset(tmp_path, "0 0.5 0.5 0.2 0.2\n", f"train: images/train\nnames: {names}\n")
    with pytest.raises(DatasetError) as info:
        formats.load_own_format(path)
    assert words in str(info.value) and str(info.value).startswith(f"{path}: \"names\"") and one_line(info)


def test_a_labelme_label_holding_a_newline_is_named_on_one_line(tmp_path):
    Image.new("RGB", (30, 20)).save(tmp_path / "a.png")
    doc = dict(imagePath="a.png", shapes=[dict(label="ca\nt", shape_type="polygon", points=[[1, 1], [9, 1]])])
    (tmp_path / "a.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError) as info:
        labelme.read_labelme_folder(str(tmp_path))
    assert 'shape 0 (polygon "ca\\nt"): 2 point(s); a polygon needs 3 or more' in str(info.value)
    assert len(str(info.value).splitlines()) == 1
