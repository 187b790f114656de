"""COCO-style evaluation of detection / segmentation / keypoint predictions.

``CocoEvaluator`` collects a model's outputs batch by batch, scores every image
with pycocotools' ``COCOeval`` as it goes, and (after merging the work of all
processes) prints the standard 12-line COCO summary per IoU type.
"""

import contextlib
import copy
import io

import numpy as np
import torch
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import utils


class CocoEvaluator:
    """Accumulates predictions and evaluates them against ``coco_gt``.

    ``iou_types`` is a list or tuple drawn from ``"bbox"``, ``"segm"`` and
    ``"keypoints"``; one ``COCOeval`` is kept per type in ``self.coco_eval``.
    """

    def __init__(self, coco_gt, iou_types):
        if not isinstance(iou_types, (list, tuple)):
            raise TypeError(f"iou_types must be a list or tuple of strings, got {type(iou_types).__name__}")
        # A private copy: loadRes and COCOeval must not alter the caller's object.
        self.coco_gt = copy.deepcopy(coco_gt)
        self.iou_types = iou_types
        self.coco_eval = {iou_type: COCOeval(self.coco_gt, iouType=iou_type) for iou_type in iou_types}
        self.img_ids = []
        self.eval_imgs = {iou_type: [] for iou_type in iou_types}
        # every detection in COCO results format: after synchronize_between_processes each
        # ``coco_eval[t].cocoDt`` holds them all, not only the last batch's
        self.results = {iou_type: [] for iou_type in iou_types}

    def update(self, predictions):
        """Evaluate ``{image_id: {"boxes", "scores", "labels", ["masks"], ["keypoints"]}}``."""
        img_ids = [int(i) for i in np.unique([int(k) for k in predictions.keys()])]
        self.img_ids.extend(img_ids)

        for iou_type in self.iou_types:
            results = self.prepare(predictions, iou_type)
            # copies: loadRes adds keys (id, area, a numpy bbox) to the dicts it is given
            self.results[iou_type].extend(dict(r) for r in results)
            # loadRes prints progress lines; keep the evaluation output clean.
            with contextlib.redirect_stdout(io.StringIO()):
                coco_dt = COCO.loadRes(self.coco_gt, results) if results else COCO()
            coco_eval = self.coco_eval[iou_type]
            coco_eval.cocoDt = coco_dt
            coco_eval.params.imgIds = list(img_ids)
            _, eval_imgs = evaluate(coco_eval)
            self.eval_imgs[iou_type].append(eval_imgs)

    def synchronize_between_processes(self):
        """Merge the per-image results of all processes into each ``COCOeval``."""
        for iou_type in self.iou_types:
            eval_imgs = np.concatenate(self.eval_imgs[iou_type], axis=2)
            create_common_coco_eval(self.coco_eval[iou_type], self.img_ids, eval_imgs)
            results, seen = [], set()
            for rank_results in utils.all_gather(self.results[iou_type]):
                # an image evaluated by two processes (a padded sampler): the first one's detections
                results += [r for r in rank_results if r["image_id"] not in seen]
                seen |= {r["image_id"] for r in rank_results}
            with contextlib.redirect_stdout(io.StringIO()):
                self.coco_eval[iou_type].cocoDt = COCO.loadRes(self.coco_gt, results) if results else COCO()

    def accumulate(self):
        for coco_eval in self.coco_eval.values():
            coco_eval.accumulate()

    def summarize(self):
        for iou_type, coco_eval in self.coco_eval.items():
            print(f"IoU metric: {iou_type}")
            coco_eval.summarize()

    def prepare(self, predictions, iou_type):
        """Predictions as a list of COCO result dicts for ``iou_type``."""
        if iou_type == "bbox":
            return self.prepare_for_coco_detection(predictions)
        if iou_type == "segm":
            return self.prepare_for_coco_segmentation(predictions)
        if iou_type == "keypoints":
            return self.prepare_for_coco_keypoint(predictions)
        raise ValueError(f"Unknown iou type {iou_type}")

    def prepare_for_coco_detection(self, predictions):
        results = []
        for image_id, prediction in predictions.items():
            if not prediction:
                continue
            boxes = convert_to_xywh(prediction["boxes"]).tolist()
            scores = _to_numpy(prediction["scores"]).tolist()
            labels = _to_numpy(prediction["labels"]).tolist()
            results.extend(
                {"image_id": int(image_id), "category_id": int(label), "bbox": box, "score": score}
                for box, score, label in zip(boxes, scores, labels)
            )
        return results

    def prepare_for_coco_segmentation(self, predictions):
        results = []
        for image_id, prediction in predictions.items():
            if not prediction:
                continue
            scores = _to_numpy(prediction["scores"]).tolist()
            labels = _to_numpy(prediction["labels"]).tolist()
            if "masks_rle" in prediction:  # already encoded (mask > 0.5), e.g. by speedups.compact_masks
                results.extend(
                    {"image_id": int(image_id), "category_id": int(label), "segmentation": rle, "score": score}
                    for rle, score, label in zip(prediction["masks_rle"], scores, labels)
                )
                continue
            masks = _to_numpy(prediction["masks"]) > 0.5
            if masks.ndim == 4:  # (N, 1, H, W) as Mask R-CNN returns them
                masks = masks[:, 0]
            if len(masks) == 0:
                continue
            rles = coco_mask.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
            for rle, score, label in zip(rles, scores, labels):
                # JSON-friendly RLE: pycocotools returns the counts as bytes.
                rle["counts"] = rle["counts"].decode("utf-8")
                results.append(
                    {"image_id": int(image_id), "category_id": int(label), "segmentation": rle, "score": score}
                )
        return results

    def prepare_for_coco_keypoint(self, predictions):
        results = []
        for image_id, prediction in predictions.items():
            if not prediction:
                continue
            scores = _to_numpy(prediction["scores"]).tolist()
            labels = _to_numpy(prediction["labels"]).tolist()
            keypoints = _to_numpy(prediction["keypoints"])
            keypoints = keypoints.reshape(len(keypoints), -1).tolist()
            results.extend(
                {"image_id": int(image_id), "category_id": int(label), "keypoints": kps, "score": score}
                for kps, score, label in zip(keypoints, scores, labels)
            )
        return results


def _to_numpy(values):
    """A numpy array from a tensor (any device) or anything array-like."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def convert_to_xywh(boxes):
    """(N, 4) box tensor from (x1, y1, x2, y2) to (x, y, width, height), as a tensor."""
    xmin, ymin, xmax, ymax = torch.as_tensor(boxes).reshape(-1, 4).unbind(1)
    return torch.stack((xmin, ymin, xmax - xmin, ymax - ymin), dim=1)


def merge(img_ids, eval_imgs):
    """Gather image ids and per-image results from all processes, one entry per image.

    ``eval_imgs`` has shape (num_categories, num_area_ranges, num_images). When an
    image was evaluated more than once its first occurrence wins; the result is
    sorted by image id, matching the order ``COCOeval`` uses.
    """
    all_img_ids = [img_id for rank_ids in utils.all_gather(img_ids) for img_id in rank_ids]
    all_eval_imgs = np.concatenate(utils.all_gather(eval_imgs), axis=2)

    merged_img_ids, first_index = np.unique(np.asarray(all_img_ids), return_index=True)
    return merged_img_ids, all_eval_imgs[..., first_index]


def create_common_coco_eval(coco_eval, img_ids, eval_imgs):
    """Load the merged results into ``coco_eval`` so that ``accumulate()`` sees all images."""
    img_ids, eval_imgs = merge(img_ids, eval_imgs)
    coco_eval.evalImgs = list(eval_imgs.flatten())
    coco_eval.params.imgIds = list(img_ids)
    coco_eval._paramsEval = copy.deepcopy(coco_eval.params)


def evaluate(imgs):
    """``COCOeval.evaluate()`` without its progress prints.

    ``imgs`` is a ``COCOeval`` with ``cocoDt`` and ``params.imgIds`` set. Fills
    ``imgs.ious``, ``imgs.evalImgs`` and ``imgs._paramsEval`` exactly as
    ``evaluate()`` does, and returns ``(img_ids, eval_imgs)`` where ``eval_imgs``
    is an object array of shape (num_categories, num_area_ranges, num_images).
    """
    p = imgs.params
    p.imgIds = list(np.unique(p.imgIds))
    if p.useCats:
        p.catIds = list(np.unique(p.catIds))
    p.maxDets = sorted(p.maxDets)

    imgs._prepare()  # groups ground truth and detections per (image, category)
    cat_ids = p.catIds if p.useCats else [-1]
    compute_iou = imgs.computeOks if p.iouType == "keypoints" else imgs.computeIoU
    imgs.ious = {
        (img_id, cat_id): compute_iou(img_id, cat_id) for img_id in p.imgIds for cat_id in cat_ids
    }

    # Same nesting as COCOeval: category, then area range, then image.
    max_det = p.maxDets[-1]
    eval_imgs = [
        imgs.evaluateImg(img_id, cat_id, area_rng, max_det)
        for cat_id in cat_ids
        for area_rng in p.areaRng
        for img_id in p.imgIds
    ]
    imgs.evalImgs = eval_imgs
    imgs._paramsEval = copy.deepcopy(p)

    # Fill an object array element-wise so numpy never tries to look inside the dicts.
    eval_array = np.empty(len(eval_imgs), dtype=object)
    eval_array[:] = eval_imgs
    return p.imgIds, eval_array.reshape(len(cat_ids), len(p.areaRng), len(p.imgIds))
