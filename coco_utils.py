"""COCO helpers for the detection reference scripts.

Two jobs:

* turn any detection dataset (``(image, target)`` pairs with torchvision-style
  target dicts) into a ``pycocotools.coco.COCO`` ground-truth object, so that
  ``coco_eval.CocoEvaluator`` can score a model on it;
* read the real COCO 2017 dataset into the same target format
  (``get_coco`` / ``CocoDetection`` / ``ConvertCocoPolysToMask``).

Like engine.py and coco_eval.py it needs utils.py beside it (``unwrap_subset``).
"""

import os

import numpy as np
import torch
import torch.utils.data
import torchvision
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

import utils

# An image of the keypoint split is kept for training only if its annotations
# together have at least this many visible keypoints.
MIN_KEYPOINTS_PER_IMAGE = 10


def image_id_as_int(value):
    """Return an image id given as a plain int, a numpy scalar/array or a tensor like ``tensor([7])``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(f"image_id must hold exactly one value, got shape {array.shape}")
    return int(array.reshape(-1)[0])


def _image_height_width(image):
    """(height, width) of a tensor image (..., H, W) or a PIL image."""
    if isinstance(image, torch.Tensor):
        return int(image.shape[-2]), int(image.shape[-1])
    width, height = image.size  # PIL reports (width, height)
    return int(height), int(width)


def convert_to_coco_api(ds):
    """Build a ``COCO`` ground-truth object from a detection dataset.

    ``ds[i]`` must return ``(image, target)``: target holds ``boxes`` (N, 4) in
    xyxy, ``labels`` and ``image_id``, and optionally ``area``, ``iscrowd``,
    ``masks`` (N, H, W) and ``keypoints`` (N, K, 3). Annotation ids start at 1;
    the categories are the labels that occur, sorted.
    """
    images, annotations, labels_seen = [], [], set()
    ann_id = 1
    for idx in range(len(ds)):
        image, target = ds[idx]
        image_id = image_id_as_int(target["image_id"])
        height, width = _image_height_width(image)
        images.append({"id": image_id, "height": height, "width": width})

        boxes = torch.as_tensor(target["boxes"], dtype=torch.float64).reshape(-1, 4)
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
        num_objs = len(boxes)
        labels = torch.as_tensor(target["labels"]).reshape(-1).tolist()
        if "area" in target:
            areas = torch.as_tensor(target["area"]).reshape(-1).tolist()
        else:
            areas = (xywh[:, 2] * xywh[:, 3]).tolist()
        if "iscrowd" in target:
            iscrowd = torch.as_tensor(target["iscrowd"]).reshape(-1).tolist()
        else:
            iscrowd = [0] * num_objs
        if "masks" in target:
            # pycocotools wants Fortran-ordered uint8 arrays of shape (H, W, N).
            masks = torch.as_tensor(target["masks"]).to(torch.uint8).cpu().numpy()
            rles = coco_mask.encode(masks.transpose(1, 2, 0).copy(order="F")) if num_objs else []
        if "keypoints" in target:
            keypoints = torch.as_tensor(target["keypoints"]).flatten(start_dim=1).tolist()

        for i in range(num_objs):
            ann = {
                "id": ann_id,
                "image_id": image_id,
                "bbox": xywh[i].tolist(),
                "category_id": labels[i],
                "area": areas[i],
                "iscrowd": int(iscrowd[i]),
            }
            if "masks" in target:
                ann["segmentation"] = rles[i]
            if "keypoints" in target:
                ann["keypoints"] = keypoints[i]
                ann["num_keypoints"] = sum(1 for v in keypoints[i][2::3] if v > 0)
            annotations.append(ann)
            labels_seen.add(labels[i])
            ann_id += 1

    coco = COCO()
    coco.dataset = {
        "images": images,
        "categories": [{"id": label} for label in sorted(labels_seen)],
        "annotations": annotations,
    }
    coco.createIndex()
    return coco


def get_coco_api_from_dataset(dataset):
    """COCO ground truth for ``dataset``, seen through any ``Subset`` wrappers.

    A ``torchvision.datasets.CocoDetection`` already carries its ``COCO`` object,
    which is returned as is. Anything else is converted with
    ``convert_to_coco_api`` -- on the dataset as given, so a ``Subset`` yields only
    its own images, with the image ids its targets report.
    """
    inner, _ = utils.unwrap_subset(dataset)
    if isinstance(inner, torchvision.datasets.CocoDetection):
        return inner.coco
    return convert_to_coco_api(dataset)


def convert_coco_poly_to_mask(segmentations, height, width):
    """Rasterise COCO polygon segmentations into a (N, height, width) uint8 tensor.

    Each entry of ``segmentations`` is one object's list of polygons; an object
    split into several polygons becomes the union of them.
    """
    masks = []
    for polygons in segmentations:
        rles = coco_mask.frPyObjects(polygons, height, width)
        decoded = coco_mask.decode(rles)
        if decoded.ndim < 3:
            decoded = decoded[..., None]
        masks.append(torch.as_tensor(decoded).any(dim=2).to(torch.uint8))
    if not masks:
        return torch.zeros((0, height, width), dtype=torch.uint8)
    return torch.stack(masks, dim=0)


class ConvertCocoPolysToMask:
    """Turn ``{"image_id", "annotations": [COCO annotation, ...]}`` into a detection target.

    Crowd annotations are dropped, boxes go from xywh to xyxy clamped to the
    image, and objects whose box is empty after clamping are removed. The
    resulting target has ``boxes``, ``labels``, ``masks``, ``image_id``, ``area``,
    ``iscrowd`` and, for keypoint annotations, ``keypoints`` (N, K, 3).
    """

    def __call__(self, image, target):
        height, width = _image_height_width(image)
        anno = [obj for obj in target["annotations"] if obj.get("iscrowd", 0) == 0]

        boxes = torch.as_tensor([obj["bbox"] for obj in anno], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2].clamp_(min=0, max=width)
        boxes[:, 1::2].clamp_(min=0, max=height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])

        labels = torch.tensor([obj["category_id"] for obj in anno], dtype=torch.int64)
        masks = convert_coco_poly_to_mask([obj["segmentation"] for obj in anno], height, width)
        area = torch.tensor([obj["area"] for obj in anno], dtype=torch.float32)
        iscrowd = torch.tensor([obj.get("iscrowd", 0) for obj in anno], dtype=torch.int64)

        new_target = {
            "boxes": boxes[keep],
            "labels": labels[keep],
            "masks": masks[keep],
            "image_id": target["image_id"],
            "area": area[keep],
            "iscrowd": iscrowd[keep],
        }
        if anno and "keypoints" in anno[0]:
            keypoints = torch.as_tensor([obj["keypoints"] for obj in anno], dtype=torch.float32)
            new_target["keypoints"] = keypoints.reshape(len(anno), -1, 3)[keep]
        return image, new_target


class _ChainPairTransforms:
    """Apply ``(image, target) -> (image, target)`` callables one after the other."""

    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, image, target):
        for transform in self.transforms:
            image, target = transform(image, target)
        return image, target


class CocoDetection(torchvision.datasets.CocoDetection):
    """COCO dataset whose targets are ``{"image_id": int, "annotations": [...]}``.

    ``transforms`` (if given) is called as ``transforms(image, target)`` on that
    dict, e.g. ``ConvertCocoPolysToMask`` followed by data augmentation.
    """

    def __init__(self, img_folder, ann_file, transforms):
        super().__init__(img_folder, ann_file)
        self._transforms = transforms

    def __getitem__(self, idx):
        image, annotations = super().__getitem__(idx)
        target = {"image_id": self.ids[idx], "annotations": annotations}
        if self._transforms is not None:
            image, target = self._transforms(image, target)
        return image, target


def _has_valid_annotation(anno):
    """Whether an image's annotations are usable for training.

    Needs at least one box wider and taller than one pixel; for keypoint
    annotations also at least ``MIN_KEYPOINTS_PER_IMAGE`` visible keypoints.
    """
    if not anno:
        return False
    if all(any(side <= 1 for side in obj["bbox"][2:]) for obj in anno):
        return False
    if "keypoints" not in anno[0]:
        return True
    visible = sum(1 for obj in anno for v in obj["keypoints"][2::3] if v > 0)
    return visible >= MIN_KEYPOINTS_PER_IMAGE


def _coco_remove_images_without_annotations(dataset, cat_list=None):
    """``Subset`` of a COCO dataset keeping only images with usable annotations.

    If ``cat_list`` is given, only annotations of those categories count.
    """
    keep = []
    for ds_idx, img_id in enumerate(dataset.ids):
        anno = dataset.coco.loadAnns(dataset.coco.getAnnIds(imgIds=img_id, iscrowd=None))
        if cat_list:
            anno = [obj for obj in anno if obj["category_id"] in cat_list]
        if _has_valid_annotation(anno):
            keep.append(ds_idx)
    return torch.utils.data.Subset(dataset, keep)


def get_coco(root, image_set, transforms, mode="instances", use_v2=False, with_masks=False):
    """COCO 2017 ``image_set`` ("train" or "val") under ``root``.

    Expects ``root/{train,val}2017/`` and ``root/annotations/{mode}_{train,val}2017.json``.
    ``transforms`` is a ``transforms(image, target)`` callable (or None). Without
    ``use_v2`` the targets are first converted by ``ConvertCocoPolysToMask``; with
    it torchvision's v2 dataset wrapper builds them (``boxes``, ``labels``,
    ``image_id`` and, if ``with_masks``, ``masks``). The train split drops images
    without usable annotations.
    """
    if image_set not in ("train", "val"):
        raise ValueError(f"image_set must be 'train' or 'val', got {image_set!r}")
    img_folder = os.path.join(root, f"{image_set}2017")
    ann_file = os.path.join(root, "annotations", f"{mode}_{image_set}2017.json")
    if not os.path.isfile(ann_file):
        raise FileNotFoundError(f"COCO annotation file not found: {ann_file}")

    if use_v2:
        target_keys = ["boxes", "labels", "image_id"] + (["masks"] if with_masks else [])
        dataset = torchvision.datasets.CocoDetection(img_folder, ann_file, transforms=transforms)
        dataset = torchvision.datasets.wrap_dataset_for_transforms_v2(dataset, target_keys=target_keys)
    else:
        steps = [ConvertCocoPolysToMask()] + ([transforms] if transforms is not None else [])
        dataset = CocoDetection(img_folder, ann_file, transforms=_ChainPairTransforms(steps))

    if image_set == "train":
        dataset = _coco_remove_images_without_annotations(dataset)
    return dataset
