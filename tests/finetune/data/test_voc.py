"""Pascal VOC folders (Annotations/ + JPEGImages/, or XMLs beside their images) read into the same
entries as a COCO file: boxes only, difficult objects as ignore regions, ImageSets splits."""

import math
import os
import xml.etree.ElementTree as ET

import pytest
from conftest import TINY, check_per_class, run_main
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_arguments import cli
from test_reader_properties import NUMBERS, TEXTS, check_contract, mutated, read_checked

from finetune.data import coco, formats, voc
from finetune.data.coco import ReadOptions
from finetune.errors import DatasetError, TutorialError
from finetune.run import checks

W, H = 40, 30


def write_image(path, size=(W, H), colour=(120, 80, 40)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def xml_text(file_name, objects=(), size=(W, H)):
    """A VOC annotation as LabelImg writes it (pretty-printed); ``objects``: (name, (xmin, ymin,
    xmax, ymax), difficult); ``size`` None: no <size>."""
    size_xml = "" if size is None else \
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
    objs = "".join(f"\n  <object>\n    <name>\n      {name}\n    </name>\n    <truncated>0</truncated>"
                   f"<difficult>{difficult}</difficult>\n    <bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                   f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox>\n  </object>"
                   for name, b, difficult in objects)
    return f"<annotation>\n  <folder>VOC</folder>\n  <filename>{file_name}</filename>\n  {size_xml}{objs}\n" \
           f"</annotation>\n"


def write_voc(root, docs, flat=False, sets=None, ext=".jpg", named=None, sizes=None):
    """A VOC folder at ``root``: ``docs`` {stem: [(name, box, difficult)]}, each image ``stem + ext``
    (40x30, its own colour). ``flat``: XMLs beside the images; ``sets``: {list name: [stems]} in
    ImageSets/Main; ``named``: {stem: the <filename> written}; ``sizes``: {stem: <size> or None}."""
    xml_dir = str(root) if flat else os.path.join(root, "Annotations")
    image_dir = str(root) if flat else os.path.join(root, "JPEGImages")
    os.makedirs(xml_dir, exist_ok=True)
    for k, (stem, objects) in enumerate(docs.items()):
        write_image(os.path.join(image_dir, stem + ext), colour=(30 * k % 255, 90, 200))
        size = (sizes or {}).get(stem, (W, H))
        with open(os.path.join(xml_dir, stem + ".xml"), "w") as f:
            f.write(xml_text((named or {}).get(stem, stem + ext), objects, size))
    for name, stems in (sets or {}).items():
        os.makedirs(os.path.join(root, "ImageSets", "Main"), exist_ok=True)
        with open(os.path.join(root, "ImageSets", "Main", name + ".txt"), "w") as f:
            f.write("".join(s + "\n" for s in stems))
    return str(root)


DOCS = {"a": [("dog", (1, 1, 20, 15), 0), ("cat", (11, 6, 30, 25), 1)],
        "b": [("cat", (5, 5, 35, 28), 0)],
        "c": []}  # a negative


def boxes(entries):
    return {os.path.basename(e["path"]): [(a["label"], a["box"], a["iscrowd"]) for a in e["anns"]] for e in entries}


def one_line(info):
    return "\n" not in str(info.value)


# --- both layouts, difficult, classes -------------------------------------------------------------

@pytest.mark.parametrize("flat", [False, True])
def test_both_layouts_read_boxes_one_based_and_difficult_as_ignore_regions(flat, tmp_path, capsys):
    path = write_voc(tmp_path / "voc", DOCS, flat=flat)
    assert voc.is_voc_folder(path) and formats.reads_as_labelme(path)
    (entries, classes, has_masks), test = formats.load_own_format(path)
    assert test is None and not has_masks and [c["name"] for c in classes] == ["cat", "dog"]
    # VOC counts pixels from 1: xmin 1 is the image's first column, x0 = 0; xmax is the last column
    assert boxes(entries) == {"a.jpg": [(2, [0.0, 0.0, 20.0, 15.0], 0), (1, [10.0, 5.0, 30.0, 25.0], 1)],
                              "b.jpg": [(1, [4.0, 4.0, 35.0, 28.0], 0)], "c.jpg": []}
    # the difficult cat is no training target, but the evaluation's ground truth keeps it as a crowd region
    ds = coco.CocoFormatDataset(entries, classes, None, has_masks)
    assert ds[0][1]["labels"].tolist() == [2] and "masks" not in ds[0][1]
    gt = coco.coco_ground_truth(entries, classes)
    assert sorted((a["category_id"], a["iscrowd"]) for a in gt.dataset["annotations"]) == [(1, 0), (1, 1), (2, 0)]
    assert "warning" not in capsys.readouterr().out


def test_classes_fix_the_order_and_leave_other_names_out_as_labelme_does(tmp_path, capsys):
    path = write_voc(tmp_path / "voc", DOCS)
    (entries, classes, _), _ = formats.load_own_format(path, class_names=["dog", "bird"])
    assert [c["name"] for c in classes] == ["dog", "bird"]
    assert boxes(entries)["a.jpg"] == [(1, [0.0, 0.0, 20.0, 15.0], 0)] and boxes(entries)["b.jpg"] == []
    out = capsys.readouterr().out
    assert f"note: {path}: 2 object(s) named \"cat\" left out (not in --classes) (Annotations/a.xml object 2, " \
           f"Annotations/b.xml object 1)" in out
    with pytest.raises(DatasetError, match=r"none of its object names \(cat, dog\) is one of the classes bird") as info:
        formats.load_own_format(path, class_names=["bird"])
    assert one_line(info)


def test_a_test_folder_gets_the_training_folders_classes(tmp_path, capsys):
    train = write_voc(tmp_path / "train", DOCS)
    test = write_voc(tmp_path / "val", {"v": [("dog", (2, 2, 12, 12), 0), ("cow", (3, 3, 9, 9), 0)]}, flat=True)
    (_, classes, _), (test_entries, test_classes, _) = formats.load_own_format(train, test)
    assert test_classes == classes and boxes(test_entries) == {"v.jpg": [(2, [1.0, 1.0, 12.0, 12.0], 0)]}
    assert f"1 object(s) named \"cow\" left out (not a name in {train})" in capsys.readouterr().out
    labelme_like = tmp_path / "json"
    labelme_like.mkdir()
    with pytest.raises(DatasetError, match="not a Pascal VOC folder; with a VOC --data-path the test set"):
        formats.load_own_format(train, str(labelme_like))


# --- ImageSets ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sets, trained, tested, said", [
    ({"train": ["a", "b"], "val": ["c"]}, ["a", "b"], ["c"],
     "training on ImageSets/Main/train.txt (2 images), testing on ImageSets/Main/val.txt (1 images)"),
    ({"trainval": ["a", "b", "c"], "val": ["b"]}, ["a", "c"], ["b"],
     "training on ImageSets/Main/trainval.txt (2 images, less the 1 also in ImageSets/Main/val.txt), testing on "
     "ImageSets/Main/val.txt (1 images)"),
    ({"trainval": ["a", "b"], "test": ["c"]}, ["a", "b"], ["c"],
     "training on ImageSets/Main/trainval.txt (2 images), testing on ImageSets/Main/test.txt (1 images)"),
    ({"train": ["a"], "val": ["b"], "test": ["c"]}, ["a"], ["b"],
     "testing on ImageSets/Main/val.txt (1 images); ImageSets/Main/test.txt not read"),
    ({"val": ["a"]}, ["b", "c"], ["a"], "training on the other 2 XMLs of Annotations, testing on"),
    ({"train": ["a", "c"]}, ["a", "c"], None,
     "training on ImageSets/Main/train.txt (2 images) (no val.txt or test.txt: holding out --test-size images)"),
])
def test_image_sets_choose_the_splits_and_say_so(sets, trained, tested, said, tmp_path, capsys):
    path = write_voc(tmp_path / "voc", DOCS, sets=sets)
    (train, classes, _), test = formats.load_own_format(path)
    assert [os.path.basename(e["path"]) for e in train] == [s + ".jpg" for s in trained]
    assert (test is None) == (tested is None)
    if tested:
        assert [os.path.basename(e["path"]) for e in test[0]] == [s + ".jpg" for s in tested] and test[1] == classes
    assert [c["name"] for c in classes] == ["cat", "dog"]  # the names of both splits
    assert said in capsys.readouterr().out


def test_a_test_data_path_leaves_the_val_list_unread(tmp_path, capsys):
    path = write_voc(tmp_path / "voc", DOCS, sets={"train": ["a", "b"], "val": ["c"]})
    other = write_voc(tmp_path / "other", {"o": [("cat", (1, 1, 9, 9), 0)]})
    (train, _, _), (test, _, _) = formats.load_own_format(path, other)
    assert len(train) == 2 and [os.path.basename(e["path"]) for e in test] == ["o.jpg"]
    assert "training on ImageSets/Main/train.txt (2 images); ImageSets/Main/val.txt not read" in \
        capsys.readouterr().out


# --- warnings and what is read silently -----------------------------------------------------------

def test_boxes_outside_zero_size_zero_based_and_renamed_images_each_one_line(tmp_path, capsys):
    docs = {"a": [("cat", (-4, 2, 20, 20), 0), ("cat", (3, 3, 40.4, 30.5), 0), ("cat", (5, 5, 5, 20), 0),
                  ("cat", (0, 0, 10, 10), 0)],
            "b": [("cat", (2, 2, 52, 20), 0), ("cat", (8, 9, 7, 20), 0), ("cat", (0, 3, 10, 10), 0)]}
    # CVAT and Roboflow write <filename> with another extension than the file's; a missing <size>: the image's
    path = write_voc(tmp_path / "voc", docs, ext=".png", named={"a": "a.jpg"}, sizes={"b": None})
    (entries, _, _), _ = formats.load_own_format(path)
    assert boxes(entries) == {
        "a.png": [(1, [0.0, 1.0, 20.0, 20.0], 0), (1, [2.0, 2.0, 40.0, 30.0], 0), (1, [0.0, 0.0, 10.0, 10.0], 0)],
        "b.png": [(1, [1.0, 1.0, 40.0, 20.0], 0), (1, [0.0, 2.0, 10.0, 10.0], 0)]}
    lines = capsys.readouterr().out.splitlines()
    assert f"warning: {path}: 2 object(s) with xmax <= xmin or ymax <= ymin (no size), dropped (Annotations/a.xml " \
           f"object 3, Annotations/b.xml object 2)" in lines
    # -4 and 52 are past an edge; 40.4 and 30.5 are rounding (<= 0.5 px), clipped without a word
    assert f"warning: {path}: 2 annotation(s) with a box reaching outside the image, clipped (ids Annotations/a.xml " \
           f"object 1, Annotations/b.xml object 1)" in lines
    assert f"note: {path}: 2 object(s) with xmin or ymin below 1, where VOC counts pixels from 1 (a 0-based " \
           f"exporter): read as the image's edge (Annotations/a.xml object 4, Annotations/b.xml object 3)" in lines
    assert f"note: {path}: 1 XML(s) without a <size> (or 0x0): the image file's size used (Annotations/b.xml)" in lines
    assert len(lines) == 4


def test_image_dir_says_where_the_images_are(tmp_path, capsys):
    path = write_voc(tmp_path / "voc", DOCS, flat=True)
    elsewhere = tmp_path / "xmls"
    elsewhere.mkdir()
    for stem in DOCS:  # LabelImg's "change save dir": the XMLs in a folder of their own
        os.replace(os.path.join(path, stem + ".xml"), elsewhere / (stem + ".xml"))
    with pytest.raises(DatasetError, match=r"a.xml: its image is not found \(nor that of any of the other 2 XMLs\); "
                                           r"looked for .*xmls/a.jpg, .*xmls/a\.\*\. .*--image-dir FOLDER") as info:
        formats.load_own_format(str(elsewhere))
    assert one_line(info)
    (entries, _, _), _ = formats.load_own_format(str(elsewhere), image_dir=path)
    assert [e["path"] for e in entries] == [os.path.join(path, s + ".jpg") for s in DOCS]


def test_some_missing_images_are_counted_and_can_be_skipped(tmp_path, capsys):
    path = write_voc(tmp_path / "voc", DOCS)
    os.remove(os.path.join(path, "JPEGImages", "b.jpg"))
    with pytest.raises(DatasetError, match=r"1 of 3 images not found \(JPEGImages/b.jpg\); the other 2 are in "
                                           r".*JPEGImages.*--skip-missing-images") as info:
        formats.load_own_format(path)
    assert one_line(info)
    # the flag goes through load_datasets for a VOC folder, as for a COCO file
    data = formats.load_datasets(path, None, lambda train: None, formats.DataSplit(1, None, 0),
                                 reading=ReadOptions(skip_missing_images=True))
    assert sorted(os.path.basename(e["path"]) for e in data["train"].entries + data["test"].entries) == \
        ["a.jpg", "c.jpg"] and not data["has_masks"]
    assert "1 of 3 images not found (JPEGImages/b.jpg): left out" in capsys.readouterr().out


def test_difficult_objects_can_be_trained_as_objects(tmp_path):
    path = write_voc(tmp_path / "voc", DOCS)
    (entries, _, _), _ = formats.load_own_format(path, reading=ReadOptions(crowd_as_objects=True))
    assert [a["iscrowd"] for e in entries for a in e["anns"]] == [0, 0, 0]


# --- errors: one line naming the file and the fix -------------------------------------------------

def _edit(path, old, new):
    with open(path) as f:
        text = f.read()
    assert old in text
    with open(path, "w") as f:
        f.write(text.replace(old, new))


A_XML = os.path.join("Annotations", "a.xml")


@pytest.mark.parametrize("old, new, words", [
    ("</annotation>", "</annotatio>", "a.xml: invalid XML (mismatched tag: line"),
    ("annotation>", "annotations>", "a.xml: not a Pascal VOC annotation: its root element is <annotations>, not "
                                    "<annotation> (CVAT's \"CVAT for images\""),
    ("<name>\n      dog\n    </name>", "", "a.xml: object 1 has no <name>. Fix it in your annotation tool"),
    ("<xmax>20</xmax>", "", "a.xml: object 1 (\"dog\"): <bndbox> has no <xmax>."),
    ("<xmax>20</xmax>", "<xmax>20,5</xmax>", "a.xml: object 1 (\"dog\"): <xmax> is '20,5', not a (finite) number."),
    ("<ymin>1</ymin>", "<ymin>nan</ymin>", "a.xml: object 1 (\"dog\"): <ymin> is 'nan', not a (finite) number."),
    ("<xmin>1</xmin>", "<xmin>1e999</xmin>", "<xmin> is '1e999', not a (finite) number"),
    ("<difficult>0</difficult>", "<difficult>2</difficult>", "a.xml: object 1 (\"dog\"): <difficult> is '2'; "
                                                             "expected 0 or 1."),
    ("<width>40</width>", "<width>50</width>", "a.xml: <size> is 50x30, but its image"),
    ("<width>40</width>", "<width>40.5</width>", "a.xml: <size> is 40.5x30; width and height are whole numbers"),
    ("<filename>a.jpg</filename>", "<filename>zz.jpg</filename>", None),  # found by the XML's own name
])
def test_bad_xml_is_one_line_naming_the_file(old, new, words, tmp_path):
    path = write_voc(tmp_path / "voc", DOCS)
    _edit(os.path.join(path, A_XML), old, new)
    if words is None:
        (entries, _, _), _ = formats.load_own_format(path)
        assert os.path.basename(entries[0]["path"]) == "a.jpg"
        return
    with pytest.raises(DatasetError) as info:
        formats.load_own_format(path)
    assert words in str(info.value) and one_line(info) and os.path.join(path, A_XML) in str(info.value)


def test_a_bndbox_missing_and_a_list_naming_a_missing_xml(tmp_path):
    path = write_voc(tmp_path / "voc", DOCS, sets={"train": ["a", "zz"]})
    with pytest.raises(DatasetError, match=r"train.txt: line 2: zz has no annotation .*zz.xml. Fix the list") as info:
        formats.load_own_format(path)
    assert one_line(info)
    path = write_voc(tmp_path / "voc2", DOCS)
    _edit(os.path.join(path, A_XML), "bndbox>", "box>")
    with pytest.raises(DatasetError, match=r"object 1 \(\"dog\"\) has no <bndbox> \(only boxes are read\)"):
        formats.load_own_format(path)


def test_two_xmls_for_one_image_and_no_object_at_all_are_errors(tmp_path):
    path = write_voc(tmp_path / "voc", DOCS, named={"b": "a.jpg"})
    os.remove(os.path.join(path, "JPEGImages", "b.jpg"))
    with pytest.raises(DatasetError, match=r"b.xml: annotates .*a.jpg, as .*a.xml does") as info:
        formats.load_own_format(path)
    assert one_line(info)
    path = write_voc(tmp_path / "empty", {"x": [], "y": []})
    with pytest.raises(DatasetError, match=r"none of its 2 XMLs has an <object>"):
        formats.load_own_format(path)


def test_folders_that_are_not_voc_get_a_message_about_voc(tmp_path):
    xmls = tmp_path / "cvat"  # CVAT's own XML format: a folder of XMLs, but not VOC
    xmls.mkdir()
    (xmls / "annotations.xml").write_text("<annotations><version>1.1</version></annotations>")
    assert voc.is_voc_folder(str(xmls))
    with pytest.raises(DatasetError, match=r"annotations.xml: not a Pascal VOC annotation.*export \"Pascal VOC\""):
        formats.load_own_format(str(xmls))
    roboflow = tmp_path / "roboflow"  # train/ valid/ test/, each of XMLs beside images
    for split in ("train", "valid"):
        write_voc(roboflow / split, {"a": [("cat", (1, 1, 9, 9), 0)]}, flat=True)
    assert voc.is_voc_folder(str(roboflow))
    with pytest.raises(DatasetError, match=r"no Pascal VOC XML files in .*roboflow. Its subfolders train/, valid/ "
                                           r"hold XMLs: pass the training one as --data-path"):
        formats.load_own_format(str(roboflow))
    empty_voc = tmp_path / "VOC"
    (empty_voc / "Annotations").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"no Pascal VOC XML files in .*Annotations. A VOC folder has"):
        formats.load_own_format(str(empty_voc))
    # a labelme folder with a stray XML stays labelme; a folder of JSONs without shapes names VOC
    labelme = tmp_path / "labelme"
    labelme.mkdir()
    (labelme / "meta.json").write_text("{}")
    (labelme / "a.xml").write_text("<annotation/>")
    assert not voc.is_voc_folder(str(labelme))
    with pytest.raises(DatasetError, match=r"its XML files are read as Pascal VOC once the JSON files are moved out.*"
                                           r"a Pascal VOC folder \(Annotations/ and JPEGImages/"):
        formats.load_own_format(str(labelme))


def test_prepare_data_and_the_test_data_path_check_take_a_voc_folder(tmp_path):
    path = write_voc(tmp_path / "voc", DOCS)
    formats.prepare_data(path, make_synthetic=lambda root: pytest.fail("the demo would write into a VOC folder"))
    formats.check_test_data_path(path, path)


def test_a_checkpoint_of_the_same_classes_in_another_order_names_the_classes_flag(tmp_path):
    path = write_voc(tmp_path / "voc", DOCS)
    classes = [dict(id=1, name="cat"), dict(id=2, name="dog")]
    checkpoint = {"model_spec": {"classes": [dict(name="dog"), dict(name="cat")]}}
    with pytest.raises(TutorialError, match=r"the same classes in another order: pass --classes dog,cat"):
        checks.check_model_for_data(path, "fasterrcnn", True, False, classes, checkpoint, "best.pth")


def test_a_mask_model_asked_for_on_boxes_only_is_one_line(tmp_path, capsys):
    path = write_voc(tmp_path / "voc", DOCS)
    code, _, err = cli(["--data-path", path, "--model", "maskrcnn", "--weights", "none", "--output-dir",
                        str(tmp_path / "run"), "-j", "0", "--test-size", "1", "-b", "1"], capsys)
    assert code == 1 and "Traceback" not in err
    assert err.strip() == f"error: {path}: no annotation has a segmentation, so there is no mask to train --model " \
                          f"maskrcnn on; use --model fasterrcnn (boxes only)."


# --- a tiny run end to end ------------------------------------------------------------------------

def test_a_tiny_faster_rcnn_run_on_a_voc_folder(one_thread, tmp_path, capsys):
    docs = {f"im{k}": [("cat", (3 + k, 4, 22 + k, 24), 0), ("dog", (20, 2 + k, 38, 16 + k), int(k == 1))]
            for k in range(6)}
    path = write_voc(tmp_path / "voc", docs, sets={"trainval": list(docs), "val": ["im4", "im5"]})
    out = str(tmp_path / "run")
    result = run_main("--data-path", path, "--model", "fasterrcnn", "--weights", "none", "--output-dir", out,
                      "--min-size", str(TINY["min_size"]), "--max-size", str(TINY["max_size"]), "--epochs", "1",
                      "-j", "0", "-b", "2", "--print-freq", "50", "--aspect-ratio-group-factor", "0")
    bbox = list(result["bbox"].values())
    assert len(bbox) == 12 and all(isinstance(v, float) and math.isfinite(v) for v in bbox)
    assert "segm" not in result and list(result["per_class"]) == ["cat", "dog"]
    check_per_class(result)
    printed = capsys.readouterr().out
    assert "training on ImageSets/Main/trainval.txt (4 images, less the 2 also in ImageSets/Main/val.txt), " \
           "testing on ImageSets/Main/val.txt (2 images)" in printed
    # --test-only from the checkpoint scores the same test split again
    again = run_main("--test-only", "--weights", os.path.join(out, "checkpoint.pth"), "--data-path", path,
                     "--output-dir", "", "-j", "0")
    assert again["bbox"] == pytest.approx(result["bbox"], abs=1e-6)


# --- generated malformed XML (hypothesis) ---------------------------------------------------------

PNG_SIZE = (24, 16)
# An XML as a tree: a dict is an element's children (a list under a key: that element repeated),
# anything else the element's text.
VOC_BASE = {"a": {"filename": "a.png", "size": {"width": 24, "height": 16, "depth": 3},
                  "object": [{"name": "cat", "difficult": 0, "bndbox": {"xmin": 1, "ymin": 2, "xmax": 12, "ymax": 9}},
                             {"name": "dog", "difficult": 1,
                              "bndbox": {"xmin": 10, "ymin": 1, "xmax": 24, "ymax": 16}}]},
            "b": {"filename": "b.jpg", "object": {"name": "dog",
                                                  "bndbox": {"xmin": 0.5, "ymin": 3, "xmax": 20.7, "ymax": 16.4}}}}
XML_VALUES = st.one_of(NUMBERS, TEXTS, st.none(), st.dictionaries(TEXTS, st.one_of(NUMBERS, TEXTS), max_size=3),
                       st.lists(st.one_of(NUMBERS, TEXTS), max_size=3))
ROOTS = st.sampled_from(["annotation"] * 6 + ["annotations"])  # (CVAT for images: refused)


def _write_generated(here, docs, root="annotation", flat=False, cut=None):
    """The images a.png and b.jpg (24x16) and the XMLs of ``docs`` (the tree above) in a VOC folder
    (or beside each other: ``flat``); ``root`` the root element's tag, ``cut`` where a.xml ends."""
    xml_dir = here if flat else os.path.join(here, "Annotations")
    image_dir = here if flat else os.path.join(here, "JPEGImages")
    os.makedirs(xml_dir, exist_ok=True)
    write_image(os.path.join(image_dir, "a.png"), PNG_SIZE)
    write_image(os.path.join(image_dir, "b.jpg"), PNG_SIZE, (10, 200, 30))
    for stem, doc in (docs.items() if isinstance(docs, dict) else []):
        if stem in VOC_BASE:
            text = ET.tostring(_element(root, doc), encoding="unicode")
            with open(os.path.join(xml_dir, f"{stem}.xml"), "w", encoding="utf-8") as f:
                f.write(text if cut is None or stem != "a" else text[:cut])


def test_the_generated_tests_base_folder_is_read_whole(tmp_path, capsys):
    _write_generated(str(tmp_path), VOC_BASE)
    (entries, classes, has_masks), _ = formats.load_own_format(str(tmp_path))
    check_contract((entries, classes, has_masks))
    assert boxes(entries) == {"a.png": [(1, [0.0, 1.0, 12.0, 9.0], 0), (2, [9.0, 0.0, 24.0, 16.0], 1)],
                              "b.jpg": [(2, [0.0, 2.0, 20.7, 16.0], 0)]}
    assert "xmin or ymin below 1" in capsys.readouterr().out  # b's 0.5: a 0-based exporter's


def _element(tag, value):
    """``value`` (the tree above) as the XML element ``tag``."""
    element = ET.Element(str(tag))
    children = value.items() if isinstance(value, dict) else []
    for key, child in children:
        for item in child if isinstance(child, list) else [child]:
            element.append(_element(key, item))
    if not isinstance(value, (dict, list)) and value is not None:
        element.text = str(value)
    return element


@settings(derandomize=True, max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(docs=mutated(VOC_BASE, values=XML_VALUES, most=4), root=ROOTS, flat=st.booleans(),
       cut=st.one_of(st.none(), st.none(), st.none(), st.integers(0, 400)))  # a quarter: an XML cut short
def test_generated_voc_xml_is_read_or_refused_in_one_line(docs, root, flat, cut, tmp_path_factory):
    """The property of tests/finetune/data/test_reader_properties.py: entries that satisfy the
    dataset contract, or one ``DatasetError`` line; never another exception."""
    here = str(tmp_path_factory.mktemp("vocgen"))
    _write_generated(here, docs, root, flat, cut)
    result = read_checked(lambda: formats.load_own_format(here)[0])
    event("read" if result is not None else "refused")
    if result is not None:
        check_contract(result)
        assert not result[2]  # boxes only
