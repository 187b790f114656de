"""Your own data: COCO instances files (any number of classes) through the whole pipeline."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import check_per_class, make_data, run_main
from PIL import Image
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from test_arguments import cli

import tv_training
from coco_eval import CocoEvaluator
from finetune.data import coco, formats, image_files, masks, synthetic
from finetune.errors import DatasetError, TutorialError
from finetune.outputs import metrics, prediction
from finetune.run import checkpoints


def write_coco(folder, images, annotations, categories, name="train.json", sizes=None):
    """A COCO file in ``folder`` and its images (solid colours) in ``folder/<name stem>/``."""
    stem = os.path.splitext(name)[0]
    os.makedirs(os.path.join(folder, stem), exist_ok=True)
    for im in images:
        w, h = (sizes or {}).get(im["file_name"], (im["width"], im["height"]))
        Image.new("RGB", (w, h), (90, 120, 30)).save(os.path.join(folder, stem, im["file_name"]))
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    return path


def simple_coco(folder, **changes):
    """Two images, category ids 0 and 5 (0 is a real class here), polygons and an RLE."""
    images = [dict(id=11, file_name="a.png", width=40, height=30), dict(id=12, file_name="b.png", width=40, height=30)]
    m = np.zeros((30, 40), np.uint8)
    m[5:15, 20:30] = 1
    rle = coco_mask.encode(np.asfortranarray(m))
    annotations = [
        dict(id=1, image_id=11, category_id=0, bbox=[2, 3, 10, 8], segmentation=[[2, 3, 12, 3, 12, 11, 2, 11]],
             area=80, iscrowd=0),
        dict(id=2, image_id=11, category_id=5, bbox=[20, 5, 10, 10],
             segmentation=dict(size=[30, 40], counts=rle["counts"].decode()), area=100, iscrowd=0),
        dict(id=3, image_id=12, category_id=5, bbox=[0, 0, 40, 30], segmentation=dict(size=[30, 40], counts=[0, 1200]),
             area=1200, iscrowd=1),
    ]
    categories = [dict(id=5, name="dog"), dict(id=0, name="cat")]
    data = dict(images=images, annotations=annotations, categories=categories)
    data.update(changes)
    return write_coco(folder, data["images"], data["annotations"], data["categories"])


# --- reading ---------------------------------------------------------------------------------

def test_labels_ids_names_crowd_and_masks(tmp_path, capsys):
    path = simple_coco(str(tmp_path))
    entries, classes, has_masks = coco.load_coco_images(path)
    assert classes == [dict(id=0, name="cat"), dict(id=5, name="dog")] and has_masks  # category 0 -> label 1
    ds = coco.CocoFormatDataset(entries, classes, None)
    image, target = ds[0]
    assert target["image_id"] == 11 and target["labels"].tolist() == [1, 2]
    assert target["boxes"].tolist() == [[2.0, 3.0, 12.0, 11.0], [20.0, 5.0, 30.0, 15.0]]
    assert target["masks"].shape == (2, 30, 40) and int(target["masks"][1].sum()) == 100
    assert int(target["masks"][1][5:15, 20:30].sum()) == 100  # the RLE decoded in place
    image, target = ds[1]  # only a crowd region: no training target, kept in the ground truth
    assert target["labels"].numel() == 0
    gt = coco.coco_ground_truth(entries, classes)
    assert [a["iscrowd"] for a in gt.loadAnns(gt.getAnnIds(imgIds=[12]))] == [1]
    assert sorted(gt.getCatIds()) == [1, 2] and sorted(gt.getImgIds()) == [11, 12]


def test_roboflow_supercategory_is_left_out_and_an_unused_class_kept(tmp_path, capsys):
    train, _ = synthetic.make_synthetic_coco(str(tmp_path / "d"), num_train=4, num_val=2, seed=1,
                                                  height_range=(64, 72), width_range=(64, 80))
    data = json.load(open(train))
    data["categories"] += [dict(id=9, name="bicycle", supercategory="shapes"), dict(id=10, name="bus")]
    json.dump(data, open(train, "w"))
    _, classes, _ = coco.load_coco_images(train)
    assert [c["name"] for c in classes] == ["pedestrian", "ball", "sign", "bicycle", "bus"]
    out = capsys.readouterr().out
    assert (f'note: {train}: 1 category(ies) without annotations that are the supercategory of others: left out '
            f'(0 "shapes")') in out
    # one line for every unused category of the file, not one each
    assert (f'note: {train}: 2 category(ies) without annotations: kept, their AP will be -1 (9 "bicycle", '
            f'10 "bus")') in out
    assert out.count("without annotations") == 2
    data["annotations"] = []  # a split without objects: the same classes as the file with them
    json.dump(data, open(train, "w"))
    assert coco.load_coco_images(train)[1] == classes


@pytest.mark.parametrize("layout", ["beside", "stem", "images", "parent_images", "image_dir", "coco_split"])
def test_images_are_found_where_exports_put_them(layout, tmp_path):
    name = "instances_val2017.json" if layout == "coco_split" else "train.json"
    images = [dict(id=11, file_name="a.png", width=40, height=30)]
    path = write_coco(str(tmp_path / "export"), images, [], [dict(id=1, name="cat")], name=name)
    src = tmp_path / "export" / os.path.splitext(name)[0]
    targets = dict(beside=tmp_path / "export", stem=src, images=tmp_path / "export" / "images",
                   parent_images=tmp_path / "images", image_dir=tmp_path / "elsewhere",
                   coco_split=tmp_path / "val2017")  # annotations/instances_val2017.json beside val2017/
    if layout != "stem":
        shutil.copytree(src, targets[layout], dirs_exist_ok=True)
        shutil.rmtree(src)
    entries, _, _ = coco.load_coco_images(path, str(targets[layout]) if layout == "image_dir" else None)
    assert os.path.dirname(entries[0]["path"]) == str(targets[layout])


@pytest.mark.parametrize("file_name", ["sub\\a.png", "/home/someone/data/sub/a.png", "http://host:8080/data/sub/a.png"])
def test_windows_names_other_machines_paths_and_urls_find_the_image(file_name, tmp_path):
    folder = tmp_path / "export"
    (folder / "train" / "sub").mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(folder / "train" / "sub" / "a.png")
    path = folder / "train.json"
    # a "path" an exporter wrote (D:\\...) is not where this machine's images are: not used
    path.write_text(json.dumps(dict(images=[dict(id=1, file_name=file_name, width=40, height=30,
                                                 path="D:\\labeling\\a.png")],
                                    annotations=[], categories=[dict(id=1, name="cat")])))
    image_dir = None if file_name.startswith("sub") else str(folder / "train" / "sub")
    entries, _, _ = coco.load_coco_images(str(path), image_dir)
    assert entries[0]["path"] == str(folder / "train" / "sub" / "a.png")


def test_one_picture_under_two_ids_is_an_error(tmp_path):
    images = [dict(id=1, file_name="a.png", width=40, height=30), dict(id=2, file_name="./a.png", width=40, height=30)]
    path = write_coco(str(tmp_path), images[:1], [], [dict(id=1, name="cat")])
    data = json.load(open(path))
    data["images"] = images
    json.dump(data, open(path, "w"))
    with pytest.raises(DatasetError) as info:
        coco.load_coco_images(path)
    assert str(info.value).startswith(f"{path}: images 1 and 2 are both {tmp_path / 'train' / 'a.png'}")


def test_an_exif_rotated_image_is_turned_upright_as_tools_show_it(tmp_path):
    photo = Image.new("RGB", (40, 30), (0, 0, 0))
    photo.paste((255, 255, 255), (0, 0, 10, 10))  # the stored pixels: white in the top-left corner
    exif = photo.getexif()
    exif[0x0112] = 3  # upside down: viewers show the white corner bottom-right
    (tmp_path / "train").mkdir()
    photo.save(tmp_path / "train" / "a.jpg", exif=exif, quality=95)
    path = tmp_path / "train.json"
    path.write_text(json.dumps(dict(images=[dict(id=1, file_name="a.jpg", width=40, height=30)],
                                    annotations=[dict(id=1, image_id=1, category_id=1, bbox=[30, 20, 10, 10])],
                                    categories=[dict(id=1, name="corner")])))
    entries, classes, _ = coco.load_coco_images(str(path))
    image, target = coco.CocoFormatDataset(entries, classes, None, with_masks=False)[0]
    assert image[:, 20:, 30:].float().mean() > 200 and image[:, :10, :10].float().mean() < 50
    assert target["boxes"].tolist() == [[30, 20, 40, 30]]  # the box on the white corner, as annotated


def test_images_none_of_which_are_found_name_every_place_looked(tmp_path):
    path = simple_coco(str(tmp_path))
    os.remove(tmp_path / "train" / "a.png")
    os.remove(tmp_path / "train" / "b.png")
    with pytest.raises(DatasetError) as info:
        coco.load_coco_images(path)
    message = str(info.value)
    assert "image a.png (id 11) not found (nor any of the other 1); looked in" in message and "--image-dir" in message
    for place in coco.image_places("a.png", path):
        assert place in message


def many_images_coco(folder, count):
    """``count`` 24x16 images with one box each, in ``folder``/train."""
    os.makedirs(os.path.join(folder, "train"), exist_ok=True)
    images = [dict(id=i, file_name=f"im{i:02d}.png", width=24, height=16) for i in range(1, count + 1)]
    for im in images:
        Image.new("RGB", (24, 16)).save(os.path.join(folder, "train", im["file_name"]))
    annotations = [dict(id=i, image_id=i, category_id=1, bbox=[2, 2, 8, 8], area=64, iscrowd=0)
                   for i in range(1, count + 1)]
    return write_coco(folder, images, annotations, [dict(id=1, name="box")])


def test_several_missing_images_are_listed_together_with_where_the_rest_are(tmp_path, capsys):
    path = many_images_coco(str(tmp_path), 12)
    for i in (2, 3, 5, 7, 8, 9, 11):
        os.remove(tmp_path / "train" / f"im{i:02d}.png")
    for image_dir in (None, str(tmp_path / "train")):  # --image-dir the folder of the others: the same error
        with pytest.raises(DatasetError) as info:
            coco.load_coco_images(path, image_dir)
        assert str(info.value) == (
            f"{path}: 7 of 12 images not found (im02.png, im03.png, im05.png, im07.png, im08.png, ...); the other 5 "
            f"are in {tmp_path / 'train'}, and these are not there. Restore them, or pass --skip-missing-images to "
            f"train without them.")
    entries, _, _ = coco.load_coco_images(path, reading=coco.ReadOptions(skip_missing_images=True))
    assert [e["image_id"] for e in entries] == [1, 4, 6, 10, 12]
    assert [a["id"] for e in entries for a in e["anns"]] == [1, 4, 6, 10, 12]
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and f"warning: {path}: 7 of 12 images not found (im02.png" in out
    assert "left out with their annotations (--skip-missing-images)" in out


def test_skip_missing_images_trains_on_the_rest(tmp_path, capsys):
    path = many_images_coco(str(tmp_path), 6)
    os.remove(tmp_path / "train" / "im03.png")
    common = ["--data-path", path, "--weights", "none", "--min-size", "64",
              "--max-size", "96", "--epochs", "1", "-j", "0", "--test-size", "1"]
    code, _, err = cli([*common, "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 1 and "1 of 6 images not found (im03.png)" in err and "Traceback" not in err
    result = run_main(*common, "--skip-missing-images", "--output-dir", str(tmp_path / "out2"))
    assert result["bbox"]["AP"] >= 0
    out = capsys.readouterr().out
    assert "1 of 6 images not found (im03.png): left out" in out and f"Dataset {path}: 5 images" in out
    for flag in ("--skip-missing-images", "--crowd-as-objects"):  # for other data they would do nothing
        code, _, err = cli([*common, flag, "--data-path", str(tmp_path / "train"), "--output-dir", ""], capsys)
        assert code == 1 and f"error: {flag}: applies to COCO files and VOC folders only" in err


@pytest.mark.parametrize("change, words", [
    ("invalid_json", "invalid JSON at line 1, column"),
    ("no_annotations_key", 'no "annotations" list'),
    ("missing_field", 'images[1] has no "height"'),
    ("unknown_image", "annotation 2 refers to image_id 99, which is not in \"images\""),
    ("unknown_category", "annotation 2 refers to category_id 42, which is not in \"categories\""),
    ("duplicate_image", "image id 11 appears twice"),
    ("duplicate_annotation", "annotation id 1 appears twice"),
    ("wrong_size", "50x30 pixels, but"),
    ("swapped_size", "width and height swapped"),
    ("labelme", "Per-image JSON (labelme) must be converted"),
    ("unreadable_image", "cannot read this image"),
    ("truncated_jpeg", "b.jpg: cannot read this image (image file is truncated"),
    ("bbox_null", 'annotation 1: "bbox" is None; expected [x, y, width, height], 4 numbers'),
    ("bbox_short", 'annotation 1: "bbox" is [2, 3]; expected [x, y, width, height], 4 numbers'),
    ("width_text", 'image 11: "width" is \'wide\'; expected a whole number of pixels >= 1'),
    ("width_nan", 'image 11: "width" is nan; expected a whole number of pixels >= 1'),
    ("height_infinite", 'image 11: "height" is inf; expected a whole number of pixels >= 1'),
    ("iscrowd_text", 'annotation 1: "iscrowd" is \'no\'; expected 0 or 1'),
    ("area_text", 'annotation 1: "area" is \'big\'; expected a number'),
    ("segmentation_text", 'annotation 1: "segmentation" is \'abc\'; expected polygons'),
    ("image_id_list", "image [11]: \"id\" is [11]; expected an integer (or a string)"),
    ("rle_without_counts", 'annotation 2: "segmentation" is {\'size\': [30, 40]}; expected an RLE with "counts"'),
    ("rle_of_another_size", 'expected an RLE whose "size" is its image\'s [height, width], [30, 40]'),
    ("rle_size_huge", '"segmentation" is {\'size\': [1000000000000.0, 40], \'counts\': [0, 1200]}; expected an RLE '
                      'whose "size" is its image\'s [height, width], [30, 40]'),
    ("rle_size_negative", 'expected an RLE whose "size" is its image\'s [height, width], [30, 40]'),
    # pycocotools walks every polygon edge pixel by pixel: 1e12 was a segmentation fault mid-training
    ("polygon_far_outside", 'annotation 1: "segmentation" has the point (1e+12, 3), far outside the 40x30 image '
                            '(more than 1% of its size past an edge); polygons are in pixels of their image. Fix the '
                            'annotation or export the file again.'),
    ("polygon_far_above", 'annotation 1: "segmentation" has the point (12, -1e+12), far outside the 40x30 image'),
    ("polygon_just_past_the_margin", 'annotation 1: "segmentation" has the point (41.5, 3), far outside the 40x30'),
    ("polygon_huge_integer", 'annotation 1: "segmentation" is [[2, 3, 10000000000'),
    ("supercategory_list", 'category 5: "supercategory" is [\'animal\']; expected the name of the category\'s group '
                           '(text), or none. Fix it or export the file again.'),
    ("supercategory_dict", 'category 5: "supercategory" is {\'name\': \'animal\'}; expected the name of the'),
    ("supercategory_number", 'category 5: "supercategory" is 3; expected the name of the category\'s group'),
    ("name_list", 'category 0: "name" is [\'cat\']; expected the class name (text)'),
    ("category_id_list", 'category [5]: "id" is [5]; expected an integer (or a string)'),
    ("file_name_list", 'image 11: "file_name" is [\'a.png\']; expected the image\'s file name'),
    ("category_id_dict", 'annotation 1: "category_id" is {}; expected an integer (or a string) id'),
    ("bbox_huge_integer", 'annotation 1: "bbox" is [2, 3, 1000'),
    ("area_list", 'annotation 1: "area" is [80]; expected a number'),
    ("iscrowd_list", 'annotation 1: "iscrowd" is [0]; expected 0 or 1'),
])
def test_bad_files_are_one_clear_error(change, words, tmp_path):
    path = simple_coco(str(tmp_path))
    data = json.load(open(path))
    if change == "invalid_json":
        open(path, "w").write('{"images": [,]}')
    elif change == "no_annotations_key":
        del data["annotations"]
    elif change == "missing_field":
        del data["images"][1]["height"]
    elif change == "unknown_image":
        data["annotations"][1]["image_id"] = 99
    elif change == "unknown_category":
        data["annotations"][1]["category_id"] = 42
    elif change == "duplicate_image":
        data["images"][1]["id"] = 11
    elif change == "duplicate_annotation":
        data["annotations"][1]["id"] = 1
    elif change == "wrong_size":
        Image.new("RGB", (50, 30)).save(tmp_path / "train" / "a.png")
    elif change == "swapped_size":
        Image.new("RGB", (30, 40)).save(tmp_path / "train" / "a.png")
    elif change == "labelme":
        data = [dict(shapes=[])]
    elif change == "unreadable_image":
        (tmp_path / "train" / "b.png").write_bytes(b"not a png")
    elif change == "truncated_jpeg":  # the header reads fine: only decoding it finds the cut
        photo = (np.random.default_rng(0).random((30, 40, 3)) * 255).astype(np.uint8)
        Image.fromarray(photo).save(tmp_path / "train" / "b.jpg", quality=95)
        whole = (tmp_path / "train" / "b.jpg").read_bytes()
        (tmp_path / "train" / "b.jpg").write_bytes(whole[: len(whole) * 2 // 3])
        data["images"][1]["file_name"] = "b.jpg"
    elif change == "bbox_null":
        data["annotations"][0]["bbox"] = None
    elif change == "bbox_short":
        data["annotations"][0]["bbox"] = [2, 3]
    elif change == "width_text":
        data["images"][0]["width"] = "wide"
    elif change == "width_nan":
        data["images"][0]["width"] = float("nan")
    elif change == "height_infinite":
        data["images"][0]["height"] = float("inf")
    elif change == "iscrowd_text":
        data["annotations"][0]["iscrowd"] = "no"
    elif change == "area_text":
        data["annotations"][0]["area"] = "big"
    elif change == "segmentation_text":
        data["annotations"][0]["segmentation"] = "abc"
    elif change == "image_id_list":
        data["images"][0]["id"] = [11]
    elif change == "rle_without_counts":
        data["annotations"][1]["segmentation"] = dict(size=[30, 40])
    elif change == "rle_of_another_size":
        data["annotations"][1]["segmentation"]["size"] = [50, 50]
    elif change == "rle_size_huge":
        data["annotations"][2]["segmentation"]["size"] = [1e12, 40]
    elif change == "rle_size_negative":
        data["annotations"][2]["segmentation"]["size"] = [-30, 40]
    elif change == "polygon_far_outside":
        data["annotations"][0]["segmentation"] = [[2, 3, 1e12, 3, 12, 11, 2, 11]]
    elif change == "polygon_far_above":
        data["annotations"][0]["segmentation"] = [[2, 3, 12, -1e12, 12, 11, 2, 11]]
    elif change == "polygon_just_past_the_margin":  # 1 pixel past the edge is clipped, 1.5 is not
        data["annotations"][0]["segmentation"] = [[2, 3, 41.5, 3, 12, 11, 2, 11]]
    elif change == "polygon_huge_integer":  # more than a float holds
        data["annotations"][0]["segmentation"] = [[2, 3, 10 ** 400, 3, 12, 11, 2, 11]]
    elif change.startswith("supercategory_"):
        data["categories"][0]["supercategory"] = {"list": ["animal"], "dict": {"name": "animal"},
                                                  "number": 3}[change.split("_")[1]]
    elif change == "name_list":
        data["categories"][1]["name"] = ["cat"]
    elif change == "category_id_list":
        data["categories"][0]["id"] = [5]
    elif change == "file_name_list":
        data["images"][0]["file_name"] = ["a.png"]
    elif change == "category_id_dict":
        data["annotations"][0]["category_id"] = {}
    elif change == "bbox_huge_integer":
        data["annotations"][0]["bbox"] = [2, 3, 10 ** 400, 8]
    elif change == "area_list":
        data["annotations"][0]["area"] = [80]
    elif change == "iscrowd_list":
        data["annotations"][0]["iscrowd"] = [0]
    if change not in ("invalid_json",):
        json.dump(data, open(path, "w"))
    with pytest.raises(DatasetError) as info:
        coco.load_coco_images(path)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith(path) or change in ("wrong_size", "swapped_size", "unreadable_image",
                                                          "truncated_jpeg")  # these name the image file


def test_polygon_points_a_little_outside_are_clipped_far_ones_never_reach_pycocotools(tmp_path, capsys, monkeypatch):
    images = [dict(id=1, file_name="a.png", width=40, height=30)]
    ann = dict(image_id=1, category_id=1, bbox=[0, 2, 40, 10], area=100, iscrowd=0)
    annotations = [dict(ann, id=1, segmentation=[[-0.8, 2, 40.9, 2, 40.9, 12, -0.8, 12]]),  # within 1 px: clipped
                   dict(ann, id=2, segmentation=[[0, 2, 40, 2, 40, 12, 0, 12]]),  # on the edges: untouched
                   dict(ann, id=3, segmentation=[[0, 2, 40, 2, 40, 12, 0, 12],
                                                 [5, 5, float("inf"), 5, 9, 9]])]  # infinity: that part dropped
    path = write_coco(str(tmp_path), images, annotations, [dict(id=1, name="bar")])
    entries, classes, _ = coco.load_coco_images(path)
    out = capsys.readouterr().out
    assert f"warning: {path}: 1 annotation(s) with polygon points a little outside the image, clipped (ids 1)" in out
    assert ("1 annotation(s) with polygon points that are not finite (NaN or infinity), those parts dropped "
            "(ids 3)") in out
    segs = [a["segmentation"] for a in entries[0]["anns"]]
    assert segs[0] == [[0.0, 2.0, 40.0, 2.0, 40.0, 12.0, 0.0, 12.0]]
    assert segs[1] == segs[2] == [[0, 2, 40, 2, 40, 12, 0, 12]]
    _, target = coco.CocoFormatDataset(entries, classes, None)[0]
    assert [int(m.sum()) for m in target["masks"]] == [400, 400, 400]

    # a point far outside is refused when the file is read: pycocotools is never called
    annotations[1]["segmentation"] = [[0, 2, 40, 2, 40, 1e12, 0, 12]]
    path = write_coco(str(tmp_path), images, annotations, [dict(id=1, name="bar")])
    monkeypatch.setattr(masks.coco_mask, "frPyObjects", lambda *a: pytest.fail("pycocotools was called"))
    with pytest.raises(DatasetError) as info:
        formats.load_datasets(path, None, lambda train: None, formats.DataSplit(1, None, 0))
    assert str(info.value) == (f'{path}: annotation 2: "segmentation" has the point (40, 1e+12), far outside the 40x30 '
                               f'image (more than 1% of its size past an edge); polygons are in pixels of their image. '
                               f'Fix the annotation or export the file again.')
    # and the helpers refuse such points themselves, should anything else hand them one
    for flat in ([0, 0, 1e12, 0, 5, 5], [0, 0, -1e12, 0, 5, 5], [0, 0, float("nan"), 0, 5, 5]):
        with pytest.raises(ValueError, match="not rasterised"):
            masks.polygon_area([flat], 30, 40)


def test_bad_annotations_are_fixed_with_one_warning_per_kind(tmp_path, capsys):
    images = [dict(id=1, file_name="a.png", width=40, height=30)]
    ann = dict(image_id=1, category_id=1, area=10, iscrowd=0)
    annotations = ([dict(ann, id=i, bbox=[30, 20, 20, 20], segmentation=[]) for i in range(1, 8)]  # outside + empty
                   + [dict(ann, id=20, bbox=[5, 5, 0, 4]),  # zero width, no segmentation
                      dict(ann, id=21, bbox=[1, 1, 8, 8], segmentation=[[1, 1, 9, 1, 9, 9, 1, 9], [2, 2, 3, 3]]),
                      dict(ann, id=22, bbox=[5, 5, 0, 4], segmentation=[[5, 5, 9, 5, 9, 9]])])  # zero width
    path = write_coco(str(tmp_path), images, annotations, [dict(id=1, name="thing")])
    entries, classes, _ = coco.load_coco_images(path)
    out = capsys.readouterr().out
    assert (f"warning: {path}: 7 annotation(s) with a box reaching outside the image, clipped "
            "(ids 1, 2, 3, 4, 5, ...)") in out
    assert "7 annotation(s) with an empty segmentation (its box is used as its mask) (ids 1, 2, 3, 4, 5, ...)" in out
    assert "1 annotation(s) with a box of zero or negative size inside the image, dropped (ids 20)" in out
    assert "1 annotation(s) with polygon parts of fewer than 3 points, dropped (ids 21)" in out
    assert "1 annotation(s) whose bbox disagrees with its segmentation (IoU < 0.7), box taken from the segmentation " \
           "(ids 22)" in out  # a real polygon is not dropped for its zero-width bbox
    _, target = coco.CocoFormatDataset(entries, classes, None)[0]
    assert len(target["boxes"]) == 9 and target["boxes"][0].tolist() == [30.0, 20.0, 40.0, 30.0]
    assert target["boxes"][-1].tolist() == [5.0, 5.0, 9.0, 9.0]
    assert int(target["masks"][0].sum()) == 100  # the clipped box as its mask
    gt = coco.coco_ground_truth(entries, classes)  # pycocotools takes every cleaned annotation
    assert len(gt.getAnnIds()) == 9


def test_broken_polygons_and_rles_are_dropped_with_one_warning_per_kind(tmp_path, capsys):
    images = [dict(id=1, file_name="a.png", width=40, height=30)]
    ann = dict(image_id=1, category_id=1, bbox=[2, 2, 10, 10], area=100, iscrowd=0)
    square = [2, 2, 12, 2, 12, 12, 2, 12]
    annotations = [dict(ann, id=1, segmentation=[square, [float("nan"), 2, 5, 2, 5, 5]]),  # one part NaN
                   dict(ann, id=2, segmentation=dict(size=[30, 40], counts="garbage~~")),  # not an RLE string
                   dict(ann, id=3, segmentation=dict(size=[30, 40], counts=[10, 5, 3])),  # runs short of 30 x 40
                   dict(ann, id=4, segmentation=dict(size=[30, 40], counts=[1000, 300])),  # runs past it
                   dict(ann, id=5, segmentation=[square]),
                   dict(ann, id=6)]  # no segmentation among annotations with one
    path = write_coco(str(tmp_path), images, annotations, [dict(id=1, name="thing")])
    entries, classes, _ = coco.load_coco_images(path)
    out = capsys.readouterr().out
    assert ("1 annotation(s) with polygon points that are not finite (NaN or infinity), those parts dropped "
            "(ids 1)") in out
    assert ("3 annotation(s) with an RLE whose run lengths do not add up to its image (height x width), dropped "
            "(ids 2, 3, 4)") in out
    assert ("1 annotation(s) without a segmentation among annotations with one: its box is used as its mask "
            "(ids 6)") in out
    _, target = coco.CocoFormatDataset(entries, classes, None)[0]
    assert [int(m.sum()) for m in target["masks"]] == [100, 100, 100]


def test_rle_strings_read_back_as_pycocotools_wrote_them():
    rng = np.random.default_rng(0)
    for shape in [(30, 40), (1, 1), (64, 3), (200, 300)]:
        mask = np.asfortranarray((rng.random(shape) > rng.random()).astype(np.uint8))
        counts = masks.rle_counts(coco_mask.encode(mask)["counts"].decode())
        flat = mask.flatten(order="F")
        edges = np.flatnonzero(np.diff(flat)) + 1
        runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
        want = runs if flat[0] == 0 else [0] + runs  # COCO starts with a run of zeros
        assert counts == want and sum(counts) == flat.size
        # the uncompressed RLE the synthetic data writes: the same runs, the compressed one pycocotools' own
        assert masks.mask_to_rle(mask, compressed=False) == dict(size=list(shape), counts=want)
        assert masks.mask_to_rle(mask)["counts"] == coco_mask.encode(mask)["counts"].decode()


def test_a_box_that_is_not_finite_is_dropped_not_clipped(tmp_path, capsys):
    path = simple_coco(str(tmp_path))
    data = json.load(open(path))
    data["annotations"][0]["bbox"] = [float("nan"), 1, 5, 5]  # json writes NaN, and Python's json reads it back
    del data["annotations"][0]["segmentation"]  # (with one, the box is taken from it)
    json.dump(data, open(path, "w"))
    entries, _, _ = coco.load_coco_images(path)
    out = capsys.readouterr().out
    assert "1 annotation(s) with a box that is not finite (NaN or infinity), dropped (ids 1)" in out
    assert "clipped" not in out and [a["id"] for e in entries for a in e["anns"]] == [2, 3]


def test_what_exporters_write_for_whole_numbers_is_read(tmp_path):
    """Ids written as 11.0 (numpy-based exporters) and sizes as 40.0 or "40" load as before."""
    path = simple_coco(str(tmp_path))
    data = json.load(open(path))
    data["images"][0].update(id=11.0, width=40.0, height="30")
    data["annotations"][0]["image_id"] = 11.0
    json.dump(data, open(path, "w"))
    entries, _, _ = coco.load_coco_images(path)
    assert (entries[0]["width"], entries[0]["height"]) == (40, 30) and len(entries[0]["anns"]) == 2


def test_categories_sharing_a_name_keep_one_result_each(tmp_path, capsys):
    path = simple_coco(str(tmp_path), categories=[dict(id=5, name="dog"), dict(id=0, name="dog")])
    _, classes, _ = coco.load_coco_images(path)
    assert [c["name"] for c in classes] == ["dog (id 0)", "dog (id 5)"]
    assert 'category 0 shares the name "dog" with another: called "dog (id 0)" here' in capsys.readouterr().out
    path = simple_coco(str(tmp_path / "b"), categories=[dict(id=5, name="dog"), dict(id=0, name="dog"),
                                                         dict(id=7, name="dog (id 0)")])
    with pytest.raises(DatasetError, match="categories share names even as"):
        coco.load_coco_images(path)


def test_16_bit_images_keep_their_picture(tmp_path):
    """PIL's convert("RGB") clips 16-bit grayscale at 255 (a white image): scaled to 8 bits instead."""

    ramp = (np.arange(30 * 40, dtype=np.uint32).reshape(30, 40) * 54).astype(np.uint16)  # 0 .. 64746
    path = str(tmp_path / "deep.png")
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    expected = torch.from_numpy((ramp >> 8).astype(np.uint8)).expand(3, -1, -1)
    assert torch.equal(image_files.read_rgb(path), expected)
    assert torch.equal(prediction.read_photo(path), expected)
    images = [dict(id=1, file_name="deep.png", width=40, height=30)]
    coco_file = str(tmp_path / "deep.json")
    json.dump(dict(images=images, annotations=[dict(id=1, image_id=1, category_id=1, bbox=[1, 1, 9, 9])],
                   categories=[dict(id=1, name="thing")]), open(coco_file, "w"))
    entries, classes, _ = coco.load_coco_images(coco_file, image_dir=str(tmp_path))
    image, _ = coco.CocoFormatDataset(entries, classes, None, with_masks=False)[0]
    assert torch.equal(image, expected)


def test_box_only_data_trains_faster_rcnn_or_says_what_to_use(tmp_path, capsys):
    images = [dict(id=i, file_name=f"{i}.png", width=64, height=64) for i in range(1, 5)]
    annotations = [dict(id=i, image_id=i, category_id=1, bbox=[8, 8, 30, 40], area=1200, iscrowd=0)
                   for i in range(1, 5)]
    path = write_coco(str(tmp_path), images, annotations, [dict(id=1, name="thing")])
    common = ["--data-path", path, "--weights", "none", "--min-size", "64", "--max-size", "64", "--epochs", "1",
              "-j", "0", "--test-size", "2", "--output-dir", ""]
    result = run_main(*common)
    assert "training the tutorial's box-only Faster R-CNN (--model fasterrcnn)" in capsys.readouterr().out
    assert "segm" not in result and set(result["per_class"]["thing"]) == {"bbox", "bbox50"}
    with pytest.raises(TutorialError, match="no mask to train --model maskrcnn on; use --model fasterrcnn"):
        run_main(*common, "--model", "maskrcnn")


def test_train_and_test_files_must_share_categories(tmp_path, capsys):
    train = simple_coco(str(tmp_path / "a"))
    test = simple_coco(str(tmp_path / "b"), categories=[dict(id=5, name="dog"), dict(id=0, name="horse")])
    with pytest.raises(DatasetError, match="its categories differ"):
        formats.load_datasets(train, None, tv_training.get_transform, formats.DataSplit(1, None, 0),
                              test_data_path=test)


def test_a_test_file_with_a_pennfudan_folder_is_an_error_not_ignored(tmp_path, capsys):
    path = simple_coco(str(tmp_path))
    # without --data-path (the default, data/PennFudanPed): said before anything is downloaded
    code, _, err = cli(["--test-only", "--weights", "none", "--test-data-path", path,
                        "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 1 and err.strip() == (f"error: --test-data-path {path}: applies to a COCO file or labelme folder as "
                                         f"--data-path; data/PennFudanPed is a Penn-Fudan folder, tested on its "
                                         f"--test-size hold-out. Pass the COCO file the model was trained on as "
                                         f"--data-path.")
    folder = make_data(str(tmp_path / "SynthPed"), num_images=3)
    with pytest.raises(DatasetError, match="applies to a COCO file or labelme folder"):
        formats.load_datasets(folder, tv_training.PennFudanDataset, tv_training.get_transform,
                              formats.DataSplit(1, None, 0), test_data_path=path)


def test_pennfudan_as_coco_gives_the_same_targets(tmp_path):
    """A Penn-Fudan folder written as COCO JSON (RLE masks) reads back as the Penn-Fudan reader reads it."""
    root = make_data(tmp_path / "PennFudanPed", num_images=3, seed=2)
    pf = tv_training.PennFudanDataset(root, None)
    images, annotations = [], []
    for idx in range(len(pf)):
        image, target = pf[idx]
        h, w = image.shape[-2:]
        images.append(dict(id=idx, file_name=os.path.join("PNGImages", pf.imgs[idx]), width=w, height=h))
        for box, mask in zip(target["boxes"].tolist(), target["masks"]):
            rle = coco_mask.encode(np.asfortranarray(mask.numpy()))
            annotations.append(dict(id=len(annotations) + 1, image_id=idx, category_id=1, iscrowd=0,
                                    bbox=[box[0], box[1], box[2] - box[0], box[3] - box[1]], area=float(mask.sum()),
                                    segmentation=dict(size=[h, w], counts=rle["counts"].decode())))
    path = os.path.join(root, "annotations.json")
    json.dump(dict(images=images, annotations=annotations, categories=[dict(id=1, name="pedestrian")]), open(path, "w"))
    entries, classes, _ = coco.load_coco_images(path)
    dataset = coco.CocoFormatDataset(entries, classes, None)
    for idx in range(len(pf)):
        (_, want), (_, got) = pf[idx], dataset[idx]
        for key in ("boxes", "masks", "labels", "iscrowd"):
            assert torch.equal(got[key].as_subclass(torch.Tensor), want[key].as_subclass(torch.Tensor)), key


def targets_as_predictions(path, labels=(1, 2)):
    """simple_coco's training targets of ``labels`` as predictions (score 1), scored against the
    file's own annotations; returns (the evaluator, the classes)."""
    entries, classes, _ = coco.load_coco_images(path)
    evaluator = CocoEvaluator(coco.coco_ground_truth(entries, classes), ["bbox", "segm"])
    for _, target in coco.CocoFormatDataset(entries, classes, None):
        keep = torch.isin(target["labels"], torch.tensor(labels))
        evaluator.update({target["image_id"]: dict(boxes=target["boxes"].as_subclass(torch.Tensor)[keep],
                                                   labels=target["labels"][keep], scores=torch.ones(int(keep.sum())),
                                                   masks=target["masks"].float()[keep][:, None])})
    evaluator.synchronize_between_processes()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator, classes


def test_the_files_own_annotations_are_the_ground_truth(tmp_path):
    """Predictions equal to the training targets score AP 1 against the file's own annotations."""
    evaluator, _ = targets_as_predictions(simple_coco(str(tmp_path)))
    assert evaluator.coco_eval["bbox"].stats[0] == pytest.approx(1.0)
    assert evaluator.coco_eval["segm"].stats[0] == pytest.approx(1.0)


def test_per_class_ap_is_each_classs_own_and_averages_to_cocos_ap(tmp_path):
    """Every cat found, no dog: the table says cat 1 and dog 0 by name, and COCO's AP is their mean."""

    evaluator, classes = targets_as_predictions(simple_coco(str(tmp_path)), labels=[1])  # label 1: "cat" (id 0)
    one, none = dict(bbox=1.0, bbox50=1.0, segm=1.0), dict(bbox=0.0, bbox50=0.0, segm=0.0)
    assert metrics.per_class_ap(evaluator, classes) == dict(cat=pytest.approx(one), dog=pytest.approx(none))
    assert evaluator.coco_eval["bbox"].stats[0] == pytest.approx(0.5)


def test_best_checkpoint_keeps_the_earlier_epoch_on_a_tie(tmp_path):
    model = torch.nn.Linear(1, 1)
    records = [dict(epoch=0, segm=dict(AP=0.2, AP50=0.5)), dict(epoch=1, segm=dict(AP=0.2, AP50=0.6))]
    path = str(tmp_path / "best.pth")
    assert not checkpoints.save_if_best(path, records, "auto", model, {}, tv_training.get_args_parser().parse_args([]))
    assert checkpoints.save_if_best(path, records, "segm50", model, {}, tv_training.get_args_parser().parse_args([]))
    best = torch.load(path, weights_only=True)
    assert (best["epoch"], best["metric"], best["value"]) == (1, "segm50", 0.6) and "optimizer" not in best


def test_synthetic_coco_is_deterministic_and_has_every_kind_of_annotation(tmp_path):
    kinds = set()
    texts = []
    for name in ("a", "b"):
        train, val = synthetic.make_synthetic_coco(str(tmp_path / name), num_train=16, num_val=4, seed=0,
                                                        height_range=(64, 72), width_range=(64, 96))
        texts.append(open(train).read() + open(val).read())
    data = json.loads(open(train).read())
    for ann in data["annotations"]:
        seg = ann["segmentation"]
        kinds.add("polygon" if isinstance(seg, list) else "rle" if isinstance(seg["counts"], str) else "raw rle")
        kinds.add("crowd" if ann["iscrowd"] else "single")
    assert texts[0] == texts[1]  # the same seed, the same files
    assert kinds == {"polygon", "rle", "raw rle", "crowd", "single"}
    assert {a["category_id"] for a in data["annotations"]} == {1, 3, 7}
    assert any(im["id"] not in {a["image_id"] for a in data["annotations"]} for im in data["images"])  # empty ones


# --- the whole pipeline on synthetic COCO data --------------------------------------------------

@pytest.fixture(scope="module")
def coco_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    # Every side either 64 or 80-96 px: torchvision's poolers infer their scales from the first batch,
    # and a side of 65-67 px padded to 96 rounds the stride-4 level's scale to 1/2 (docs/own-data.md, "Known limits").
    train, val = synthetic.make_synthetic_coco(str(root / "shapes"), num_train=12, num_val=4, seed=0,
                                                    height_range=(64, 64), width_range=(80, 96))
    out = str(root / "run")
    result = run_main("--demo", "--data-path", train, "--test-data-path", val, "--output-dir", out, "--min-size", "64",
                      "--max-size", "96", "--epochs", "2", "-j", "0", "--print-freq", "5",
                      "--aspect-ratio-group-factor", "0")
    return result, out, train, val


def test_per_class_table_and_best_checkpoint(coco_run, capsys):
    result, out, _, _ = coco_run
    assert list(result["per_class"]) == ["pedestrian", "ball", "sign"]
    assert all(set(row) == {"bbox", "bbox50", "segm"} for row in result["per_class"].values())
    check_per_class(result)
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert [set(r["per_class"]) for r in metrics] == [{"pedestrian", "ball", "sign"}] * 2
    best = torch.load(os.path.join(out, "best.pth"), weights_only=True)
    assert {"model", "model_spec", "args", "epoch", "metric", "value"} == set(best)
    values = [r["segm"]["AP"] for r in metrics]
    assert best["metric"] == "segm" and best["value"] == max(values) and best["epoch"] == values.index(max(values))
    ckpt = torch.load(os.path.join(out, "checkpoint.pth"), weights_only=True)
    assert [c["name"] for c in ckpt["model_spec"]["classes"]] == ["pedestrian", "ball", "sign"]
    assert ckpt["model_spec"]["num_classes"] == 4


def test_predict_with_a_coco_checkpoint_needs_no_json(coco_run, tmp_path):
    _, out, _, val = coco_run
    folder = os.path.join(os.path.dirname(val), "val")
    result = run_main("--predict", folder, "--weights", os.path.join(out, "checkpoint.pth"), "--output-dir",
                      str(tmp_path), "--score-threshold", "0")
    detections = [d for r in result["predictions"] for d in r["detections"]]
    assert detections and {d["category_name"] for d in detections} <= {"pedestrian", "ball", "sign"}
    assert {d["category_id"] for d in detections} <= {1, 3, 7}  # the file's own ids
    d = detections[0]
    assert d["bbox"] == pytest.approx([d["box_xyxy"][0], d["box_xyxy"][1], d["box_xyxy"][2] - d["box_xyxy"][0],
                                       d["box_xyxy"][3] - d["box_xyxy"][1]], abs=0.02)
    images = COCO(str(tmp_path / "predict" / "images.json"))
    loaded = images.loadRes(str(tmp_path / "predict" / "results.json"))
    assert len(loaded.getAnnIds()) == len(detections)


def test_test_only_on_coco_data_reproduces_the_last_evaluation(coco_run):
    result, out, train, val = coco_run
    again = run_main("--test-only", "--weights", os.path.join(out, "checkpoint.pth"), "--data-path", train,
                     "--test-data-path", val, "--output-dir", "", "-j", "0")
    assert again["bbox"] == pytest.approx(result["bbox"], abs=1e-6)
    for name, row in result["per_class"].items():
        assert again["per_class"][name] == pytest.approx(row, abs=1e-6)
    # the checkpoint alone: it names its data (a labelme or YOLO run's too)
    alone = run_main("--test-only", "--weights", os.path.join(out, "checkpoint.pth"), "--output-dir", "", "-j", "0")
    assert alone["bbox"] == again["bbox"]


def test_resume_on_coco_data_needs_only_the_checkpoint(coco_run, tmp_path, capsys):
    """The checkpoint knows its COCO files: --resume alone continues the run, best.pth tracking included."""
    result, out, train, val = coco_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    resumed = run_main("--resume", str(copy / "checkpoint.pth"), "--epochs", "3", "-j", "0")
    printed = capsys.readouterr().out
    assert f"--data-path {train}" in printed and f"--test-data-path {val}" in printed
    assert [r["epoch"] for r in resumed["records"]] == [0, 1, 2]
    assert set(resumed["per_class"]) == set(result["per_class"])
    best = torch.load(copy / "best.pth", weights_only=True)
    values = [r["segm"]["AP"] for r in resumed["records"]]
    assert best["value"] == max(values) and best["epoch"] == values.index(max(values))


# --- what real exports do -------------------------------------------------------------------

def cvat_like(folder, boxes, segmentations, iscrowd=0):
    """One 60x40 image whose annotations have these bboxes and segmentations."""
    images = [dict(id=1, file_name="a.png", width=60, height=40)]
    annotations = [dict(id=i + 1, image_id=1, category_id=1, bbox=b, segmentation=s, area=10, iscrowd=iscrowd)
                   for i, (b, s) in enumerate(zip(boxes, segmentations))]
    return write_coco(folder, images, annotations, [dict(id=1, name="car")])


def test_bboxes_that_disagree_with_their_polygons_are_taken_from_the_polygons(tmp_path, capsys):
    square = [[10, 10, 30, 10, 30, 30, 10, 30]]
    # 1: the polygon's own box, to rounding; 2: a box of another object; 3: outside the polygon's half
    path = cvat_like(str(tmp_path), [[10, 10, 20.4, 20.3], [40, 2, 15, 6], [10, 10, 10, 20]],
                     [square, square, square])
    entries, _, _ = coco.load_coco_images(path)
    assert [a["box"] for a in entries[0]["anns"]] == [[10.0, 10.0, 30.4, 30.3]] + [[10.0, 10.0, 30.0, 30.0]] * 2
    out = capsys.readouterr().out
    assert out == (f"warning: {path}: 2 annotation(s) whose bbox disagrees with its segmentation (IoU < 0.7), box "
                   f"taken from the segmentation (ids 2, 3)\n")
    # every annotation's box wrong (the CVAT file): said to be the file's fault
    path = cvat_like(str(tmp_path / "all"), [[40, 2, 15, 6], [0, 0, 5, 5]], [square, [[35, 5, 55, 5, 55, 35]]])
    entries, _, _ = coco.load_coco_images(path)
    assert [a["box"] for a in entries[0]["anns"]] == [[10.0, 10.0, 30.0, 30.0], [35.0, 5.0, 55.0, 35.0]]
    out = capsys.readouterr().out
    assert "2 annotation(s) whose bbox disagrees with its segmentation" in out and \
        "every one of them, so the file's bbox fields are wrong" in out


def test_an_rle_mask_gives_the_box_where_the_bbox_disagrees(tmp_path):
    m = np.zeros((40, 60), np.uint8)
    m[5:25, 30:50] = 1
    counts = masks.mask_to_rle(m, compressed=False)
    path = cvat_like(str(tmp_path), [[0, 0, 10, 10], [30, 5, 20, 20]], [counts, masks.mask_to_rle(m)])
    entries, _, _ = coco.load_coco_images(path)
    assert [a["box"] for a in entries[0]["anns"]] == [[30.0, 5.0, 50.0, 25.0]] * 2


def test_boxes_past_the_edge_by_rounding_are_clipped_without_a_word(tmp_path, capsys):
    path = cvat_like(str(tmp_path), [[50, 30, 10.4, 10.5], [-0.3, 0, 10, 10], [50, 30, 12, 10]],
                     [None, None, None])
    entries, _, _ = coco.load_coco_images(path)
    assert [a["box"] for a in entries[0]["anns"]] == [[50.0, 30.0, 60.0, 40.0], [0.0, 0.0, 9.7, 10.0],
                                                      [50.0, 30.0, 60.0, 40.0]]
    assert capsys.readouterr().out == (f"warning: {path}: 1 annotation(s) with a box reaching outside the image, "
                                       f"clipped (ids 3)\n")


def test_an_export_of_crowd_masks_only_says_so_and_trains_with_crowd_as_objects(tmp_path, capsys):
    m = np.zeros((40, 60), np.uint8)
    m[5:25, 30:50] = 1
    rle = masks.mask_to_rle(m, compressed=False)  # as CVAT writes its brush masks: uncompressed, iscrowd 1
    path = cvat_like(str(tmp_path), [[30, 5, 20, 20]] * 2, [rle, rle], iscrowd=1)
    with pytest.raises(DatasetError) as info:
        formats.load_datasets(path, None, tv_training.get_transform, formats.DataSplit(0, None, 0))
    assert str(info.value) == (f'{path}: all 2 training annotations are crowd regions (COCO "iscrowd": 1, VOC '
                               f'difficult), which are left out of training as ignore regions, so there is nothing to '
                               f'train on. CVAT marks every mask it exports so: pass --crowd-as-objects to train on '
                               f'them as objects.')
    # as a test file, crowd regions only are fine (ignore regions in the evaluation)
    assert len(coco.load_coco_images(path)[0][0]["anns"]) == 2
    entries, classes, _ = coco.load_coco_images(path, reading=coco.ReadOptions(crowd_as_objects=True))
    _, target = coco.CocoFormatDataset(entries, classes, None)[0]
    assert len(target["boxes"]) == 2 and int(target["masks"][0].sum()) == 400
    assert [a["iscrowd"] for a in coco.coco_ground_truth(entries, classes).dataset["annotations"]] == [0, 0]


def test_a_box_only_model_hears_nothing_of_boxes_used_as_masks(tmp_path, capsys):
    path = cvat_like(str(tmp_path), [[10, 10, 20, 20], [30, 5, 20, 20]], [[[10, 10, 30, 10, 30, 30]], None])
    coco.load_coco_images(path)
    assert "its box is used as its mask" in capsys.readouterr().out
    coco.load_coco_images(path, reading=coco.ReadOptions(masks=False))
    assert capsys.readouterr().out == ""


# --- found by the property-based tests (tests/finetune/data/test_reader_properties.py) ---------

@pytest.mark.parametrize("area", [float("nan"), float("inf"), -5])
def test_an_area_that_is_not_a_pixel_count_is_one_error(area, tmp_path):
    """COCO evaluation ranks objects by area: NaN fell in every size range, a negative one in none (silently)."""
    path = simple_coco(str(tmp_path))
    data = json.load(open(path))
    data["annotations"][0]["area"] = area
    json.dump(data, open(path, "w"))
    with pytest.raises(DatasetError) as info:
        coco.load_coco_images(path)
    assert f'annotation 1: "area" is {area!r}; expected a number of pixels >= 0' in str(info.value)
    assert "\n" not in str(info.value)


def test_a_box_of_float_noise_size_is_dropped_not_trained_on(tmp_path, capsys):
    """A width of 1e-9 px is 0 in float32: torchvision's detectors would stop the run on it."""
    path = simple_coco(str(tmp_path))
    data = json.load(open(path))
    data["annotations"][0]["bbox"] = [12, 4, 1e-9, 8]
    del data["annotations"][0]["segmentation"]  # (with one, the box is taken from it)
    json.dump(data, open(path, "w"))
    entries, classes, _ = coco.load_coco_images(path)
    assert "1 annotation(s) with a box of zero or negative size inside the image, dropped (ids 1)" in \
        capsys.readouterr().out
    boxes = coco.CocoFormatDataset(entries, classes, None)[0][1]["boxes"]
    assert boxes.tolist() == [[20.0, 5.0, 30.0, 15.0]] and bool((boxes[:, 2:] > boxes[:, :2]).all())


def test_a_warning_line_names_long_ids_in_short(tmp_path, capsys):
    """String ids (UUIDs and longer) would make a warning line of any length: each is cut, and so is the list."""
    path = simple_coco(str(tmp_path))
    data = json.load(open(path))
    extra = [dict(id=f"{k}-" + "x" * 200, image_id=11, category_id=5, bbox=[float("nan"), 1, 5, 5]) for k in range(6)]
    data["annotations"] += extra
    json.dump(data, open(path, "w"))
    coco.load_coco_images(path)
    line, = [s for s in capsys.readouterr().out.splitlines() if "not finite" in s]
    assert line.startswith(f"warning: {path}: 6 annotation(s) with a box that is not finite (NaN or infinity), "
                           f"dropped (ids 0-xxx") and line.endswith("xxx, ...)")
    places = line.split("dropped (ids ", 1)[1]
    assert len(places) <= coco.PLACES_CHARS + len(", ...)") and places.count("...") >= 3


def test_an_id_holding_a_newline_is_named_on_the_warnings_line(tmp_path, capsys):
    path = simple_coco(str(tmp_path))
    data = json.load(open(path))
    data["annotations"].append(dict(id="a\nb", image_id=11, category_id=5, bbox=[float("nan"), 1, 5, 5]))
    json.dump(data, open(path, "w"))
    coco.load_coco_images(path)
    out = capsys.readouterr().out
    assert "with a box that is not finite (NaN or infinity), dropped (ids a\\nb)" in out
    assert all(line.startswith(("warning: ", "note: ")) for line in out.splitlines())


def test_string_image_ids_are_numbered_so_evaluation_takes_them(tmp_path):
    images = [dict(id="img-a", file_name="a.png", width=40, height=30), dict(id="img-b", file_name="b.png", width=40,
                                                                              height=30)]
    annotations = [dict(id="x", image_id="img-b", category_id=1, bbox=[2, 2, 10, 10], area=100, iscrowd=0)]
    path = write_coco(str(tmp_path), images, annotations, [dict(id=1, name="thing")])
    entries, classes, _ = coco.load_coco_images(path)
    assert [(e["image_id"], len(e["anns"])) for e in entries] == [(1, 0), (2, 1)]
    gt = coco.coco_ground_truth(entries, classes)
    evaluator = CocoEvaluator(gt, ["bbox"])
    evaluator.update({2: dict(boxes=torch.tensor([[2.0, 2.0, 12.0, 12.0]]), scores=torch.tensor([0.9]),
                          labels=torch.tensor([1]))})
    evaluator.synchronize_between_processes()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.coco_eval["bbox"].stats[1] == pytest.approx(1.0)
