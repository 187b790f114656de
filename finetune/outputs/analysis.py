"""The numbers of the failure report (``finetune.outputs.report``), from what a COCO evaluation
already holds: box IoU, or mask IoU from the RLEs of a segm evaluation (pycocotools', with COCO's
crowd rule), detections matched to ground truth per image, the confusion matrix over the K
classes plus background, an error breakdown after TIDE (the AP each kind of error costs) and the
per-class precision-recall curves.
"""

from typing import NamedTuple

import numpy as np
from pycocotools import mask as mask_util


def box_iou(a, b, crowd=None):
    """IoU of (N, 4) and (M, 4) xyxy boxes as an (N, M) array, by pycocotools (COCO's own box IoU).
    Where ``crowd[j]`` is true, the overlap is divided by the area of ``a``'s box alone, as COCO
    scores a detection on a crowd region. A box with a NaN coordinate overlaps nothing (0)."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))  # pycocotools answers [] without boxes on one side
    crowd = np.zeros(len(b), np.uint8) if crowd is None else np.asarray(crowd, bool).astype(np.uint8)
    # xywh with w = x1 - x0: pycocotools' x0 + w gives back x1 and w * h the area, bit for bit
    iou = mask_util.iou(_xywh(a), _xywh(b), crowd)
    return np.where(np.isnan(iou), 0.0, iou)


def mask_iou(a, b, crowd=None):
    """IoU of the COCO RLEs ``a`` (N) and ``b`` (M) as an (N, M) array, by pycocotools (COCO's own
    segm IoU); ``crowd`` as in ``box_iou``: the overlap divided by the area of ``a``'s mask alone."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))  # pycocotools answers [] without masks on one side
    crowd = np.zeros(len(b), np.uint8) if crowd is None else np.asarray(crowd, bool).astype(np.uint8)
    iou = np.asarray(mask_util.iou(list(a), list(b), crowd), float).reshape(len(a), len(b))
    return np.where(np.isnan(iou), 0.0, iou)


def image_iou(image, dets, gts, crowd=False):
    """IoU of ``image``'s detections ``dets`` with its objects ``gts`` (index arrays), ``crowd``:
    scored as on crowd regions. Masks where the image holds them (``images_from_coco`` with
    ``masks``), else boxes."""
    dets, gts = np.asarray(dets, int), np.asarray(gts, int)
    flags = np.ones(len(gts), bool) if crowd else None
    if "gt_rles" in image:
        return mask_iou([image["det_rles"][i] for i in dets], [image["gt_rles"][j] for j in gts], flags)
    return box_iou(image["det_boxes"][dets], image["gt_boxes"][gts], flags)


def _xywh(boxes):
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _xyxy(bbox):
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def images_from_coco(coco_gt, coco_dt, image_ids=None, masks=False):
    """One dict per image: ``image_id``, ground truth ``gt_boxes`` (xyxy), ``gt_labels`` (category
    ids), ``gt_crowd``; detections ``det_boxes``, ``det_labels``, ``det_scores`` (by score, highest
    first). ``coco_dt`` may be an empty ``COCO()`` (no detection at all).

    With ``masks`` (``coco_dt`` a segm evaluation's results) also ``gt_rles`` and ``det_rles``, the
    objects' and detections' masks as RLEs, and the matching here scores those instead of boxes."""
    image_ids = sorted(coco_gt.getImgIds()) if image_ids is None else list(image_ids)
    dt_by_image = {}
    for ann in getattr(coco_dt, "anns", {}).values():
        dt_by_image.setdefault(ann["image_id"], []).append(ann)
    images = []
    for image_id in image_ids:
        gts = coco_gt.imgToAnns.get(image_id, [])
        dts = sorted(dt_by_image.get(image_id, []), key=lambda d: -d["score"])
        images.append(dict(
            image_id=image_id,
            gt_boxes=np.array([_xyxy(g["bbox"]) for g in gts], float).reshape(-1, 4),
            gt_labels=np.array([g["category_id"] for g in gts], int),
            gt_crowd=np.array([bool(g.get("iscrowd", 0)) for g in gts], bool),
            det_boxes=np.array([_xyxy(d["bbox"]) for d in dts], float).reshape(-1, 4),
            det_labels=np.array([d["category_id"] for d in dts], int),
            det_scores=np.array([d["score"] for d in dts], float)))
        if masks:  # annToRLE: polygons and uncompressed RLEs as one RLE each, on the image's size
            images[-1].update(gt_rles=[coco_gt.annToRLE(g) for g in gts],
                              det_rles=[d["segmentation"] for d in dts])
    return images


def match_image(image, iou_threshold=0.5, score_threshold=0.5):
    """Detections scoring at least ``score_threshold`` matched one-to-one to ground-truth objects
    with IoU >= ``iou_threshold``, whatever their classes, highest score first; a detection takes
    an object of its own class when it overlaps one enough, otherwise the one it overlaps most.

    Returns ``(pairs, missed, false, ignored)``: ``(det, gt)`` index pairs; unmatched objects
    (crowd regions excepted); the other unmatched detections, except those on a crowd region of
    their own class (COCO ignores those, and only those); detections on one."""
    keep = np.nonzero(image["det_scores"] >= score_threshold)[0]
    keep = keep[np.argsort(-image["det_scores"][keep], kind="stable")]
    real = np.nonzero(~image["gt_crowd"])[0]
    crowd = np.nonzero(image["gt_crowd"])[0]
    iou = image_iou(image, keep, real)
    same_class = image["det_labels"][keep][:, None] == image["gt_labels"][crowd][None, :]
    on_crowd = ((image_iou(image, keep, crowd, crowd=True) >= iou_threshold) & same_class).any(axis=1) \
        if len(crowd) else np.zeros(len(keep), bool)
    taken, pairs, false, ignored = np.zeros(len(real), bool), [], [], []
    for i, d in enumerate(keep):
        overlaps = np.where(taken, -1.0, iou[i]) if len(real) else np.zeros(0)
        ok = overlaps >= iou_threshold
        same = ok & (image["gt_labels"][real] == image["det_labels"][d])
        pick = np.where(same if same.any() else ok, overlaps, -1.0)
        if ok.any():
            j = int(np.argmax(pick))
            taken[j] = True
            pairs.append((int(d), int(real[j])))
        elif on_crowd[i]:
            ignored.append(int(d))
        else:
            false.append(int(d))
    missed = [int(j) for j, t in zip(real, taken) if not t]
    return pairs, missed, false, ignored


def confusion_matrix(images, num_classes, iou_threshold=0.5, score_threshold=0.5):
    """(K + 1) x (K + 1) counts: row = true class, column = predicted class, labels 1..K at
    index 0..K-1 and the background last (row K: false detections, column K: missed objects).

    Also returns, per image, ``dict(missed, false, confused)`` (counts) for ordering the gallery."""
    k = num_classes
    matrix = np.zeros((k + 1, k + 1), int)
    per_image = []
    for image in images:
        pairs, missed, false, _ = match_image(image, iou_threshold, score_threshold)
        confused = 0
        for d, g in pairs:
            t, p = _index(image["gt_labels"][g], k), _index(image["det_labels"][d], k)
            matrix[t, p] += 1
            confused += t != p
        for g in missed:
            matrix[_index(image["gt_labels"][g], k), k] += 1
        for d in false:
            matrix[k, _index(image["det_labels"][d], k)] += 1
        per_image.append(dict(missed=len(missed), false=len(false), confused=int(confused)))
    return matrix, per_image


def _index(label, num_classes):
    """Label 1..K as row/column 0..K-1 (a label outside goes to the background)."""
    return int(label) - 1 if 1 <= label <= num_classes else num_classes


def row_normalised(matrix):
    """Each row divided by its sum (a row without any count stays 0)."""
    sums = matrix.sum(axis=1, keepdims=True)
    return np.where(sums > 0, matrix / np.where(sums > 0, sums, 1), 0.0)


ERROR_KINDS = ("cls", "loc", "both", "dupl", "bkg", "miss")


ERROR_NAMES = dict(cls="classification", loc="localisation", both="both cls + loc", dupl="duplicate",
                   bkg="background", miss="missed")


def average_precision(scores, is_tp, num_gt):
    """COCO's interpolated AP (101 recall points) of detections ``scores`` with their true-positive
    flags, for ``num_gt`` objects; None without any object."""
    if num_gt <= 0:
        return None
    order = np.argsort(-np.asarray(scores, float), kind="mergesort")  # COCO's stable order
    tp = np.asarray(is_tp, bool)[order]
    tps, fps = np.cumsum(tp), np.cumsum(~tp)
    recall = tps / num_gt
    precision = tps / np.maximum(tps + fps, np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    thresholds = np.linspace(0, 1, 101)
    at = np.searchsorted(recall, thresholds, side="left")
    return float(np.mean([precision[i] if i < len(precision) else 0.0 for i in at]))


def _classify_detections(image, fg_iou, bg_iou, max_dets):
    """One image's detections as (class, score, kind, target object); kind is "tp" or an error
    kind; crowd-region detections are left out. Also the indices of the objects found."""
    labels_all = image["det_labels"]
    kept = []
    for c in np.unique(labels_all):  # COCO keeps the top max_dets per image and class
        idx = np.nonzero(labels_all == c)[0]
        kept += list(idx[np.argsort(-image["det_scores"][idx], kind="mergesort")][:max_dets])
    kept = sorted(kept, key=lambda d: -image["det_scores"][d])
    real, crowd = np.nonzero(~image["gt_crowd"])[0], np.nonzero(image["gt_crowd"])[0]
    every = np.arange(len(labels_all))
    iou = image_iou(image, every, real)
    crowd_iou = image_iou(image, every, crowd, crowd=True)
    gt_labels = image["gt_labels"][real]
    matched = np.zeros(len(real), bool)
    out = []
    # true positives first, class by class and by score as COCO matches them
    kinds = {}
    for d in kept:
        same = (gt_labels == labels_all[d]) & ~matched
        cand = np.where(same, iou[d], -1.0) if len(real) else np.zeros(0)
        if len(cand) and cand.max() >= fg_iou:
            j = int(np.argmax(cand))
            matched[j] = True
            kinds[d] = ("tp", j)
        elif len(crowd) and (crowd_iou[d][image["gt_labels"][crowd] == labels_all[d]] >= fg_iou).any():
            kinds[d] = ("ignored", None)
    for d in kept:
        if d in kinds:
            if kinds[d][0] == "tp":
                out.append((int(labels_all[d]), float(image["det_scores"][d]), "tp", kinds[d][1]))
            continue
        own = gt_labels == labels_all[d]
        iou_own = np.where(own, iou[d], -1.0) if len(real) else np.zeros(0)
        iou_other = np.where(~own, iou[d], -1.0) if len(real) else np.zeros(0)
        best_own = iou_own.max() if len(real) else -1.0
        best_other = iou_other.max() if len(real) else -1.0
        if bg_iou <= best_own < fg_iou:
            kind, target = "loc", int(np.argmax(iou_own))
        elif best_other >= fg_iou:
            kind, target = "cls", int(np.argmax(iou_other))
        elif best_own >= fg_iou:
            kind, target = "dupl", int(np.argmax(iou_own))
        elif max(best_own, best_other) < bg_iou:
            kind, target = "bkg", None
        else:
            kind, target = "both", None
        out.append((int(labels_all[d]), float(image["det_scores"][d]), kind, target))
    return out, matched, gt_labels


class _Tally(NamedTuple):
    """The detections and objects of all images, as ``error_breakdown`` weighs them."""
    dets: list  # (class, score, kind, (image, object) or None), image by image, by score
    num_gt: np.ndarray  # objects per class (index 1..K)
    missed_by_class: dict  # class -> objects neither found nor targeted by a cls/loc error
    gt_class: dict  # (image, object) -> its class


def _tally(images, num_classes, fg_iou, bg_iou, max_dets):
    """Every image's detections classified (``_classify_detections``), with the objects per class."""
    dets = []  # (class, score, kind, (image, object) or None)
    num_gt, found, targeted, missed_by_class = np.zeros(num_classes + 1, int), set(), set(), {}
    for n, image in enumerate(images):
        out, matched, gt_labels = _classify_detections(image, fg_iou, bg_iou, max_dets)
        for c in gt_labels:
            if 1 <= c <= num_classes:
                num_gt[c] += 1
        for c, s, kind, target in out:
            key = (n, target) if target is not None else None
            dets.append((c, s, kind, key))
            if kind == "tp":
                found.add(key)
            elif kind in ("cls", "loc"):
                targeted.add(key)
        for j, c in enumerate(gt_labels):
            if (n, j) not in found and (n, j) not in targeted and 1 <= c <= num_classes:
                missed_by_class[c] = missed_by_class.get(c, 0) + 1
    gt_class = {}
    for n, image in enumerate(images):
        real = image["gt_labels"][~image["gt_crowd"]]
        gt_class.update({(n, j): int(c) for j, c in enumerate(real)})
    return _Tally(dets, num_gt, missed_by_class, gt_class)


def _mean_ap(tally, num_classes, fix=None):
    """The mean AP over the classes with ground truth once the oracle fixes the errors of kind
    ``fix`` (None: as is); None without any object."""
    # (position in dets, score, true positive) per class: at equal scores the detections keep
    # COCO's order (image by image, then by score), as its accumulate() sorts them stably
    per_class = {c: [] for c in range(1, num_classes + 1)}
    best = {}  # object -> (score, class, position) of its single true positive after the fix
    for i, (c, s, kind, key) in enumerate(tally.dets):
        if kind == "tp" or (kind == fix and fix in ("cls", "loc")):
            c = tally.gt_class[key] if kind == "cls" else c
            if key not in best or s > best[key][0]:  # one true positive per object: the
                best[key] = (s, c, i)  # highest-scoring; the oracle drops the other
            continue
        if kind == fix or kind == "ignored":
            continue  # dropped by the oracle
        if c in per_class:
            per_class[c].append((i, s, False))
    for s, c, i in best.values():
        if c in per_class:
            per_class[c].append((i, s, True))
    aps = []
    for c, found in per_class.items():
        found.sort()
        gt = tally.num_gt[c] - (tally.missed_by_class.get(c, 0) if fix == "miss" else 0)
        ap = average_precision([s for _, s, _ in found], [t for _, _, t in found], gt)
        if ap is not None:
            aps.append(ap)
    return float(np.mean(aps)) if aps else None


def error_breakdown(images, num_classes, fg_iou=0.5, bg_iou=0.1, max_dets=100):
    """TIDE's error kinds (see above) over ``images`` (``images_from_coco``'s dicts).

    Returns ``dict(ap, dap={kind: AP gained if fixed}, counts={kind: detections or objects},
    fg_iou, bg_iou)``; AP values over the classes 1..K with ground truth (``ap`` None without any)."""
    tally = _tally(images, num_classes, fg_iou, bg_iou, max_dets)
    base = _mean_ap(tally, num_classes)
    counts = {k: sum(1 for d in tally.dets if d[2] == k) for k in ERROR_KINDS if k != "miss"}
    counts["miss"] = int(sum(tally.missed_by_class.values()))
    dap = {}
    for kind in ERROR_KINDS:
        fixed = _mean_ap(tally, num_classes, kind)
        dap[kind] = 0.0 if base is None or fixed is None else max(0.0, fixed - base)
    return dict(ap=base, dap=dap, counts=counts, fg_iou=fg_iou, bg_iou=bg_iou)


def pr_curves(coco_eval, classes, iou_thresholds=(0.5, 0.75)):
    """``{iou: {class name: (recall, precision)}}`` from an accumulated ``COCOeval`` (all areas,
    100 detections): its own interpolated precision at its 101 recall points. A class without
    ground truth in the test images is left out."""
    precision, params = coco_eval.eval["precision"], coco_eval.params
    recall = np.asarray(params.recThrs)
    curves = {}
    for t in iou_thresholds:
        hits = np.nonzero(np.isclose(params.iouThrs, t))[0]
        if not len(hits):
            continue
        curves[t] = {}
        for k, cat_id in enumerate(params.catIds):
            p = precision[hits[0], :, k, 0, -1]
            if (p > -1).any() and 1 <= cat_id <= len(classes):
                curves[t][classes[cat_id - 1]["name"]] = (recall, np.clip(p, 0, None))
    return curves
