"""Tests for coco_utils.py and coco_eval.py on tiny in-memory and on-disk datasets."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask
from torch.utils.data import Subset
from torchvision import tv_tensors

import coco_eval
import coco_utils
from coco_eval import CocoEvaluator
from coco_utils import ConvertCocoPolysToMask, convert_to_coco_api, get_coco, get_coco_api_from_dataset

HEIGHT, WIDTH = 40, 50
# Per image: image id and its objects as (x1, y1, x2, y2, label). Box areas are all
# below 32*32, so only the "small" COCO area range has ground truth.
IMAGES = [
    (10, [(2, 3, 12, 13, 1), (20, 5, 35, 25, 2)]),
    (11, [(5, 5, 25, 30, 1)]),
    (12, [(30, 10, 45, 20, 2), (0, 0, 8, 6, 1)]),
]


def _rect_masks(boxes):
    masks = torch.zeros((len(boxes), HEIGHT, WIDTH), dtype=torch.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
        masks[i, y1:y2, x1:x2] = 1
    return masks


class TinyDetectionDataset(torch.utils.data.Dataset):
    """3 images of 40x50 whose masks fill their boxes; image_id alternates int / tensor."""

    def __len__(self):
        return len(IMAGES)

    def __getitem__(self, idx):
        image_id, objects = IMAGES[idx]
        boxes = torch.tensor([obj[:4] for obj in objects], dtype=torch.float32)
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(HEIGHT, WIDTH)),
            "labels": torch.tensor([obj[4] for obj in objects], dtype=torch.int64),
            "image_id": image_id if idx % 2 == 0 else torch.tensor([image_id]),
            "masks": tv_tensors.Mask(_rect_masks(boxes)),
        }
        if idx == 0:  # explicit area / iscrowd on one image, computed defaults on the others
            target["area"] = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            target["iscrowd"] = torch.zeros(len(objects), dtype=torch.int64)
        return tv_tensors.Image(torch.rand(3, HEIGHT, WIDTH)), target


def _perfect_predictions(dataset, to_numpy=False):
    """Model-style outputs equal to the ground truth, keyed by int image id."""
    predictions = {}
    for idx in range(len(dataset)):
        _, target = dataset[idx]
        masks = target["masks"].float()[:, None]  # (N, 1, H, W) probabilities
        pred = {
            "boxes": target["boxes"].as_subclass(torch.Tensor).clone(),
            "scores": torch.ones(len(masks)),
            "labels": target["labels"].clone(),
            "masks": masks.as_subclass(torch.Tensor),
        }
        if to_numpy:
            pred = {k: v.numpy() for k, v in pred.items()}
        predictions[IMAGES[idx][0]] = pred
    return predictions


def _run_evaluator(coco_gt, predictions_batches, iou_types=("bbox", "segm")):
    evaluator = CocoEvaluator(coco_gt, list(iou_types))
    for batch in predictions_batches:
        evaluator.update(batch)
    evaluator.synchronize_between_processes()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator


# ---------------------------------------------------------------- convert_to_coco_api


def test_convert_to_coco_api_images_and_categories():
    coco = convert_to_coco_api(TinyDetectionDataset())
    assert sorted(coco.getImgIds()) == [10, 11, 12]
    for img_id in (10, 11, 12):
        img = coco.imgs[img_id]
        assert (img["id"], img["height"], img["width"]) == (img_id, HEIGHT, WIDTH)
        assert isinstance(img["id"], int)
    assert coco.dataset["categories"] == [{"id": 1}, {"id": 2}]


def test_convert_to_coco_api_annotations():
    coco = convert_to_coco_api(TinyDetectionDataset())
    anns = coco.dataset["annotations"]
    assert [ann["id"] for ann in anns] == list(range(1, 6))

    expected = [(img_id, obj) for img_id, objects in IMAGES for obj in objects]
    for ann, (img_id, (x1, y1, x2, y2, label)) in zip(anns, expected):
        assert ann["image_id"] == img_id
        assert ann["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1])
        assert ann["area"] == pytest.approx((x2 - x1) * (y2 - y1))
        assert ann["iscrowd"] == 0
        assert ann["category_id"] == label
        expected_mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        expected_mask[y1:y2, x1:x2] = 1
        np.testing.assert_array_equal(coco_mask.decode(ann["segmentation"]), expected_mask)
    assert coco.getAnnIds(imgIds=[12]) == [4, 5]


def test_convert_to_coco_api_pil_images_keypoints_and_empty_targets():
    class KeypointDataset(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, idx):
            image = Image.new("RGB", (WIDTH, HEIGHT))  # PIL: (width, height)
            if idx == 1:
                return image, {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0), "image_id": 1}
            keypoints = torch.tensor([[[3.0, 4.0, 2.0], [5.0, 6.0, 0.0], [7.0, 8.0, 1.0]]])
            target = {
                "boxes": torch.tensor([[1.0, 2.0, 11.0, 22.0]]),
                "labels": torch.tensor([3]),
                "image_id": torch.tensor(0),
                "keypoints": keypoints,
            }
            return image, target

    coco = convert_to_coco_api(KeypointDataset())
    assert coco.imgs[0]["height"] == HEIGHT and coco.imgs[0]["width"] == WIDTH
    assert coco.getAnnIds(imgIds=[1]) == []
    (ann,) = coco.dataset["annotations"]
    assert ann["keypoints"] == [3.0, 4.0, 2.0, 5.0, 6.0, 0.0, 7.0, 8.0, 1.0]
    assert ann["num_keypoints"] == 2
    assert ann["area"] == pytest.approx(200.0)
    assert "segmentation" not in ann


def test_get_coco_api_from_dataset_sees_through_subsets():
    dataset = TinyDetectionDataset()
    assert sorted(get_coco_api_from_dataset(Subset(dataset, [2, 0])).getImgIds()) == [10, 12]
    nested = Subset(Subset(dataset, [0, 2]), [1])
    coco = get_coco_api_from_dataset(nested)
    assert coco.getImgIds() == [12]
    assert len(coco.getAnnIds()) == 2


# ---------------------------------------------------------------- CocoEvaluator


def test_evaluator_rejects_non_sequence_iou_types():
    coco = convert_to_coco_api(TinyDetectionDataset())
    with pytest.raises(TypeError):
        CocoEvaluator(coco, "bbox")


def test_perfect_predictions_score_one(capsys):
    dataset = TinyDetectionDataset()
    coco = convert_to_coco_api(dataset)
    evaluator = _run_evaluator(coco, [_perfect_predictions(dataset)])

    out = capsys.readouterr().out
    assert "IoU metric: bbox" in out and "IoU metric: segm" in out
    assert "Running per image evaluation" not in out and "Loading and preparing results" not in out
    for iou_type in ("bbox", "segm"):
        stats = evaluator.coco_eval[iou_type].stats
        assert stats[0] == pytest.approx(1.0)  # AP@[.5:.95]
        assert stats[1] == pytest.approx(1.0)  # AP@.5
        assert stats[3] == pytest.approx(1.0)  # AP small
        assert stats[4] == -1 and stats[5] == -1  # no medium / large ground truth
        assert stats[8] == pytest.approx(1.0)  # AR@100
    # the caller's COCO object is left untouched
    assert evaluator.coco_gt is not coco


def test_numpy_predictions_and_batched_updates():
    dataset = TinyDetectionDataset()
    coco = convert_to_coco_api(dataset)
    predictions = _perfect_predictions(dataset, to_numpy=True)
    batches = [{k: predictions[k]} for k in (12, 10)] + [{11: predictions[11]}]
    evaluator = _run_evaluator(coco, batches)
    assert evaluator.coco_eval["bbox"].params.imgIds == [10, 11, 12]
    assert evaluator.coco_eval["bbox"].stats[0] == pytest.approx(1.0)
    assert evaluator.coco_eval["segm"].stats[0] == pytest.approx(1.0)


def test_empty_predictions_score_zero():
    dataset = TinyDetectionDataset()
    coco = convert_to_coco_api(dataset)
    empty = {
        img_id: {
            "boxes": torch.zeros((0, 4)),
            "scores": torch.zeros(0),
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros((0, 1, HEIGHT, WIDTH)),
        }
        for img_id, _ in IMAGES
    }
    evaluator = _run_evaluator(coco, [empty])
    for iou_type in ("bbox", "segm"):
        stats = evaluator.coco_eval[iou_type].stats
        assert stats[0] == 0  # ground truth exists, nothing found
        assert stats[8] == 0  # AR@100
        assert stats[4] == -1 and stats[5] == -1  # no ground truth in these area ranges


def test_shifted_box_gives_partial_ap():
    dataset = TinyDetectionDataset()
    coco = convert_to_coco_api(dataset)
    predictions = _perfect_predictions(dataset)
    predictions[11]["boxes"] = predictions[11]["boxes"] + torch.tensor([3.0, 3.0, 3.0, 3.0])
    evaluator = _run_evaluator(coco, [predictions], iou_types=["bbox"])
    ap = evaluator.coco_eval["bbox"].stats[0]
    assert 0 < ap < 1
    assert evaluator.coco_eval["bbox"].stats[1] == pytest.approx(1.0)  # still a match at IoU 0.5


def test_duplicate_image_updates_are_counted_once():
    dataset = TinyDetectionDataset()
    coco = convert_to_coco_api(dataset)
    predictions = _perfect_predictions(dataset)
    evaluator = _run_evaluator(coco, [{10: predictions[10]}, {10: predictions[10]}])

    assert evaluator.img_ids == [10, 10]
    coco_e = evaluator.coco_eval["bbox"]
    assert coco_e.params.imgIds == [10]
    assert coco_e._paramsEval.imgIds == [10]
    num_cats, num_areas = len(coco_e.params.catIds), len(coco_e.params.areaRng)
    assert len(coco_e.evalImgs) == num_cats * num_areas * 1
    assert coco_e.stats[0] == pytest.approx(1.0)


def test_merge_across_two_simulated_processes(monkeypatch):
    """Two ranks with overlapping, unsorted images score the same as one process."""
    dataset = TinyDetectionDataset()
    coco = convert_to_coco_api(dataset)
    predictions = _perfect_predictions(dataset)
    predictions[11]["boxes"] = predictions[11]["boxes"] + torch.tensor([3.0, 3.0, 3.0, 3.0])

    single = _run_evaluator(coco, [predictions], iou_types=["bbox"])

    rank0, rank1 = CocoEvaluator(coco, ["bbox"]), CocoEvaluator(coco, ["bbox"])
    for img_id in (12, 10):
        rank0.update({img_id: predictions[img_id]})
    for img_id in (11, 10):
        rank1.update({img_id: predictions[img_id]})
    # all_gather is called with the image ids, then with the eval_imgs array, then the detections
    other_rank = iter([rank1.img_ids, np.concatenate(rank1.eval_imgs["bbox"], axis=2), rank1.results["bbox"]])
    monkeypatch.setattr(coco_eval.utils, "all_gather", lambda data: [data, next(other_rank)])
    rank0.synchronize_between_processes()
    rank0.accumulate()

    merged = rank0.coco_eval["bbox"]
    assert merged.params.imgIds == [10, 11, 12]
    # evalImgs is laid out (category, area range, image): each entry sits under its own image id
    num_images = len(merged.params.imgIds)
    for flat_index, entry in enumerate(merged.evalImgs):
        if entry is not None:
            assert entry["image_id"] == merged.params.imgIds[flat_index % num_images]
    merged.summarize()
    np.testing.assert_allclose(merged.stats, single.coco_eval["bbox"].stats)
    # cocoDt holds every image's detections once (image 10, seen by both ranks, from rank 0)
    per_image = [a["image_id"] for a in merged.cocoDt.anns.values()]
    assert sorted(per_image) == sorted(i for i in (10, 11, 12) for _ in range(len(predictions[i]["boxes"])))


def test_evaluate_helper_shape_and_silence(capsys):
    dataset = TinyDetectionDataset()
    evaluator = CocoEvaluator(convert_to_coco_api(dataset), ["bbox"])
    capsys.readouterr()  # COCO.createIndex in convert_to_coco_api prints its own progress
    evaluator.update(_perfect_predictions(dataset))
    eval_imgs = evaluator.eval_imgs["bbox"][0]
    assert eval_imgs.shape == (2, 4, 3)  # categories, area ranges, images
    assert capsys.readouterr().out == ""


def test_convert_to_xywh():
    out = coco_eval.convert_to_xywh(torch.tensor([[1.0, 2.0, 4.0, 8.0]]))
    assert isinstance(out, torch.Tensor) and out.tolist() == [[1.0, 2.0, 3.0, 6.0]]  # a tensor, as the reference's


# ---------------------------------------------------------------- COCO dataset pieces


def test_convert_coco_polys_to_mask():
    image = Image.new("RGB", (WIDTH, HEIGHT))
    crowd_rle = coco_mask.encode(np.asfortranarray(np.ones((HEIGHT, WIDTH, 1), dtype=np.uint8)))[0]
    annotations = [
        {"bbox": [5, 5, 20, 10], "category_id": 1, "area": 200.0, "iscrowd": 0,
         "segmentation": [[5, 5, 25, 5, 25, 15, 5, 15]]},
        {"bbox": [0, 0, 50, 40], "category_id": 2, "area": 2000.0, "iscrowd": 1, "segmentation": crowd_rle},
        # sticks out of the image: its box gets clamped
        {"bbox": [40, 30, 20, 20], "category_id": 3, "area": 100.0, "iscrowd": 0,
         "segmentation": [[40, 30, 60, 30, 60, 50, 40, 50]]},
        # zero width: dropped
        {"bbox": [10, 10, 0, 5], "category_id": 4, "area": 0.0, "iscrowd": 0,
         "segmentation": [[10, 10, 10, 10, 10, 15, 10, 15]]},
    ]
    out_image, target = ConvertCocoPolysToMask()(image, {"image_id": 7, "annotations": annotations})

    assert out_image is image
    assert target["image_id"] == 7
    assert target["boxes"].tolist() == [[5.0, 5.0, 25.0, 15.0], [40.0, 30.0, 50.0, 40.0]]
    assert target["labels"].tolist() == [1, 3]
    assert target["masks"].shape == (2, HEIGHT, WIDTH) and target["masks"].dtype == torch.uint8
    assert int(target["masks"][0].sum()) == 200
    assert int(target["masks"][1].sum()) == 100
    assert target["area"].tolist() == [200.0, 100.0]
    assert target["iscrowd"].tolist() == [0, 0]
    assert "keypoints" not in target


def test_convert_coco_polys_to_mask_with_keypoints_and_no_objects():
    image = torch.zeros(3, HEIGHT, WIDTH)
    keypoints = [1, 2, 2, 3, 4, 0]
    ann = {"bbox": [0, 0, 10, 10], "category_id": 1, "area": 100.0, "iscrowd": 0,
           "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]], "keypoints": keypoints}
    _, target = ConvertCocoPolysToMask()(image, {"image_id": 1, "annotations": [ann]})
    assert target["keypoints"].tolist() == [[[1, 2, 2], [3, 4, 0]]]

    _, empty = ConvertCocoPolysToMask()(image, {"image_id": 2, "annotations": []})
    assert empty["boxes"].shape == (0, 4)
    assert empty["masks"].shape == (0, HEIGHT, WIDTH)


def test_get_coco_missing_annotation_file(tmp_path):
    expected = os.path.join(str(tmp_path), "annotations", "instances_val2017.json")
    with pytest.raises(FileNotFoundError) as excinfo:
        get_coco(str(tmp_path), "val", transforms=None)
    assert expected in str(excinfo.value)


def _write_tiny_coco(root):
    """Two images in COCO layout: image 1 has one object, image 2 none."""
    os.makedirs(os.path.join(root, "train2017"))
    os.makedirs(os.path.join(root, "annotations"))
    images = []
    for img_id in (1, 2):
        name = f"{img_id:012d}.jpg"
        Image.new("RGB", (WIDTH, HEIGHT), (img_id * 40, 0, 0)).save(os.path.join(root, "train2017", name))
        images.append({"id": img_id, "file_name": name, "height": HEIGHT, "width": WIDTH})
    annotation = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 10], "area": 200.0,
                  "iscrowd": 0, "segmentation": [[5, 5, 25, 5, 25, 15, 5, 15]]}
    data = {"images": images, "annotations": [annotation], "categories": [{"id": 1, "name": "thing"}]}
    with open(os.path.join(root, "annotations", "instances_train2017.json"), "w") as f:
        json.dump(data, f)


@pytest.mark.parametrize("use_v2", [False, True])
def test_get_coco_train_split(tmp_path, use_v2, capsys):
    _write_tiny_coco(str(tmp_path))
    calls = []

    def record(image, target):
        calls.append(target)
        return image, target

    dataset = get_coco(str(tmp_path), "train", transforms=record, use_v2=use_v2, with_masks=True)
    assert isinstance(dataset, Subset) and len(dataset) == 1  # image 2 has no annotation

    image, target = dataset[0]
    assert calls == [target]
    assert int(target["image_id"]) == 1
    assert torch.as_tensor(target["boxes"]).tolist() == [[5.0, 5.0, 25.0, 15.0]]
    assert target["labels"].tolist() == [1]
    assert int(target["masks"][0].sum()) == 200
    # the COCO object is reused through the Subset rather than rebuilt
    assert get_coco_api_from_dataset(dataset) is dataset.dataset.coco
    capsys.readouterr()


def test_remove_images_without_annotations_keypoint_rule():
    kps_visible = lambda n: [1, 1, 2] * n + [0, 0, 0] * (17 - n)  # noqa: E731
    good_box = [0, 0, 10, 10]
    assert not coco_utils._has_valid_annotation([])
    assert not coco_utils._has_valid_annotation([{"bbox": [0, 0, 1, 10]}])  # only tiny boxes
    assert coco_utils._has_valid_annotation([{"bbox": good_box}])
    assert not coco_utils._has_valid_annotation([{"bbox": good_box, "keypoints": kps_visible(9)}])
    assert coco_utils._has_valid_annotation([{"bbox": good_box, "keypoints": kps_visible(10)}])
    assert coco_utils._has_valid_annotation(
        [{"bbox": good_box, "keypoints": kps_visible(5)}, {"bbox": good_box, "keypoints": kps_visible(5)}]
    )


def test_predictions_with_masks_as_rle_score_like_full_masks():
    """``masks_rle`` (speedups.compact_masks) gives the same segm numbers as the full masks."""
    dataset = TinyDetectionDataset()
    coco = convert_to_coco_api(dataset)
    dense = _perfect_predictions(dataset)
    dense[11]["masks"][0, 0, :2] = 1.0  # one imperfect mask, so the numbers are not all 1
    compact = {}
    for image_id, pred in dense.items():
        rles = []
        for m in pred["masks"][:, 0] > 0.5:
            rle = coco_mask.encode(np.asfortranarray(m.numpy().astype(np.uint8)))
            rles.append(dict(size=list(rle["size"]), counts=rle["counts"].decode("ascii")))
        compact[image_id] = {k: v for k, v in pred.items() if k != "masks"} | {"masks_rle": rles}
    expected = _run_evaluator(coco, [dense], iou_types=["segm"]).coco_eval["segm"].stats
    got = _run_evaluator(coco, [compact], iou_types=["segm"]).coco_eval["segm"].stats
    assert expected[0] < 1.0 and np.array_equal(got, expected)
