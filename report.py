"""Where the model fails: ``output/report/`` with ``report.html`` and its figures.

Written after the last evaluation of a run and after ``--test-only``, from what that
evaluation already holds (``CocoEvaluator.coco_eval[t]``: ``cocoGt``, ``cocoDt`` with every
detection, ``eval["precision"]``); the model is not run again. Parts:

* precision-recall curves per class at IoU 0.5 and 0.75 (pycocotools' own numbers);
* a confusion matrix over the K classes plus background (``confusion_matrix``);
* an error breakdown after TIDE (``error_breakdown``): the AP each kind of error costs;
* a gallery of the test images, worst first, ground truth beside the predictions;
* the run, its final and best metrics, the per-class table.

The report is built in ``report.partial/`` and renamed into place, so ``report/`` is always a
whole report; an earlier one is moved into ``report/earlier/<time>/``, never deleted.
"""

import html
import json
import os
import shutil
import time

import numpy as np

from errors import TutorialError
from outputs import NoInterrupt

NAME, PARTIAL, EARLIER = "report", "report.partial", "earlier"
GALLERY_SIZE = 50  # images shown, worst first (the tutorial's and the demo's whole test set)
GALLERY_LONG_SIDE = 384  # a 128-px image upscaled 3x: class names and boxes readable
GALLERY_MAX_SIDE = 640  # a phone photo scaled down: two panels fit the page, and its JPEG is ~100 KB, not 18 MB
COLOURS = dict(truth=(0, 160, 60), missed=(255, 140, 0), correct=(30, 90, 230), wrong=(220, 20, 60))


# ---------------------------------------------------------------------------------------
# Ground truth and detections per image, from the COCO objects of the evaluation
# ---------------------------------------------------------------------------------------

def box_iou(a, b, crowd=None):
    """IoU of (N, 4) and (M, 4) xyxy boxes as an (N, M) array. Where ``crowd[j]`` is true, the
    overlap is divided by the area of ``a``'s box alone, as COCO scores a detection on a crowd region."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    union = area_a[:, None] + area_b[None, :] - inter
    if crowd is not None:
        union = np.where(np.asarray(crowd, bool)[None, :], area_a[:, None], union)
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _xyxy(bbox):
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def images_from_coco(coco_gt, coco_dt, image_ids=None):
    """One dict per image: ``image_id``, ground truth ``gt_boxes`` (xyxy), ``gt_labels`` (category
    ids), ``gt_crowd``; detections ``det_boxes``, ``det_labels``, ``det_scores`` (by score, highest
    first). ``coco_dt`` may be an empty ``COCO()`` (no detection at all)."""
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
    return images


# ---------------------------------------------------------------------------------------
# Confusion matrix
# ---------------------------------------------------------------------------------------

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
    iou = box_iou(image["det_boxes"][keep], image["gt_boxes"][real])
    same_class = image["det_labels"][keep][:, None] == image["gt_labels"][crowd][None, :]
    on_crowd = ((box_iou(image["det_boxes"][keep], image["gt_boxes"][crowd], np.ones(len(crowd), bool))
                 >= iou_threshold) & same_class).any(axis=1) if len(crowd) else np.zeros(len(keep), bool)
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


# ---------------------------------------------------------------------------------------
# Error breakdown after TIDE
# ---------------------------------------------------------------------------------------
# Definitions from D. Bolya, S. Foley, J. Hays, J. Hoffman, "TIDE: A General Toolbox for
# Identifying Object Detection Errors", ECCV 2020 (the code here is this project's own).
# A detection that is not a true positive at the foreground IoU t_f (0.5) is, with IoU_max its
# largest IoU with a ground-truth object:
#   loc  - IoU_max with an object of its own class in [t_b, t_f)        (t_b = 0.1, background IoU)
#   cls  - IoU_max >= t_f with an object of another class
#   dupl - IoU_max >= t_f with an object of its class already matched by a higher-scoring detection
#   bkg  - IoU_max < t_b with every object
#   both - otherwise: IoU_max in [t_b, t_f) with an object of another class
# (tested in this order, so each detection has one kind), and
#   miss - an object no detection found, nor targeted by a cls or loc error.
# Each kind's cost is dAP: the AP once an oracle fixes that kind alone, minus the AP as is.
# Oracles: cls - the detection takes the object's class; loc - it takes the object's box (either
# way a true positive unless the object already has a higher-scoring one: then it is dropped, as
# is the lower-scoring true positive if the fixed one scores higher); both, dupl, bkg - the
# detection is dropped; miss - the missed objects leave the count of objects to find.
# AP is COCO's (101 recall points, at most 100 detections per image and class, crowd regions
# ignored) at t_f, averaged over the classes with ground truth: as is, it equals COCO's AP50.

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
    iou = box_iou(image["det_boxes"], image["gt_boxes"][real])
    crowd_iou = box_iou(image["det_boxes"], image["gt_boxes"][crowd], np.ones(len(crowd), bool))
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


def error_breakdown(images, num_classes, fg_iou=0.5, bg_iou=0.1, max_dets=100):
    """TIDE's error kinds (see above) over ``images`` (``images_from_coco``'s dicts).

    Returns ``dict(ap, dap={kind: AP gained if fixed}, counts={kind: detections or objects},
    fg_iou, bg_iou)``; AP values over the classes 1..K with ground truth (``ap`` None without any)."""
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

    def mean_ap(fix=None):
        # (position in dets, score, true positive) per class: at equal scores the detections keep
        # COCO's order (image by image, then by score), as its accumulate() sorts them stably
        per_class = {c: [] for c in range(1, num_classes + 1)}
        best = {}  # object -> (score, class, position) of its single true positive after the fix
        for i, (c, s, kind, key) in enumerate(dets):
            if kind == "tp" or (kind == fix and fix in ("cls", "loc")):
                c = gt_class[key] if kind == "cls" else c
                if key not in best or s > best[key][0]:  # one true positive per object: the
                    best[key] = (s, c, i)  # highest-scoring; the oracle drops the other
                continue
            if kind == fix or kind == "ignored":
                continue  # dropped by the oracle
            if c in per_class:
                per_class[c].append((i, s, False))
        for key, (s, c, i) in best.items():
            if c in per_class:
                per_class[c].append((i, s, True))
        aps = []
        for c, found in per_class.items():
            found.sort()
            gt = num_gt[c] - (missed_by_class.get(c, 0) if fix == "miss" else 0)
            ap = average_precision([s for _, s, _ in found], [t for _, _, t in found], gt)
            if ap is not None:
                aps.append(ap)
        return float(np.mean(aps)) if aps else None

    base = mean_ap()
    counts = {k: sum(1 for d in dets if d[2] == k) for k in ERROR_KINDS if k != "miss"}
    counts["miss"] = int(sum(missed_by_class.values()))
    dap = {}
    for kind in ERROR_KINDS:
        fixed = mean_ap(kind)
        dap[kind] = 0.0 if base is None or fixed is None else max(0.0, fixed - base)
    return dict(ap=base, dap=dap, counts=counts, fg_iou=fg_iou, bg_iou=bg_iou)


# ---------------------------------------------------------------------------------------
# Precision-recall data from pycocotools
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    import warnings

    with warnings.catch_warnings():  # a class name the font cannot draw (CJK): boxes, not a warning per glyph
        warnings.filterwarnings("ignore", "Glyph .* missing from", UserWarning)
        fig.tight_layout()
        fig.savefig(path, dpi=80, format="png")
    _pyplot().close(fig)


def _short(name, most=24):
    """A class name as a figure shows it: a long one cut, so it cannot cover the other panel."""
    return name if len(name) <= most else name[:most - 1] + "\u2026"


def plot_pr(curves_by_type, path):
    """``{iou type: pr_curves(...)}`` as one figure: a row per type, a panel per IoU threshold,
    a line per class (legend: its AP at that IoU). One figure: each costs ~0.3 s to save."""
    plt = _pyplot()
    rows, cols = len(curves_by_type), max(1, *(len(c) for c in curves_by_type.values()))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    panels = [(ax, iou_type, t, per_class) for row, (iou_type, curves) in zip(axes, curves_by_type.items())
              for ax, (t, per_class) in zip(row, curves.items())]
    colours = plt.get_cmap("tab20").colors  # 20 before a colour repeats (the default cycle: 10)
    for ax, iou_type, t, per_class in panels:
        for k, (name, (r, p)) in enumerate(per_class.items()):
            ax.plot(r, p, lw=1.4, color=colours[k % len(colours)], label=f"{_short(name)} ({p.mean():.3f})")
        ax.set_title(f"{iou_type}: precision-recall at IoU {t:g}")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if per_class:
            ax.legend(fontsize=8, loc="lower left", title="class (AP)", title_fontsize=8)
    _save(fig, path)


def plot_confusion(matrix, names, iou_threshold, score_threshold, path):
    """Counts and row-normalised fractions side by side."""
    plt = _pyplot()
    labels = [_short(n) for n in names] + ["background"]
    size = 2.2 + 0.45 * len(labels)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, values, title, fmt in ((axes[0], matrix, "counts", "d"),
                                   (axes[1], row_normalised(matrix), "each row / its sum", ".2f")):
        ax.imshow(values / max(values.max(), 1e-9), cmap="Blues", vmin=0, vmax=1)
        for (i, j), v in np.ndenumerate(values):
            dark = values[i, j] > 0.6 * values.max()
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlabel("predicted (background: missed)")
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel("true (background: false detection)")
    fig.suptitle(f"Confusion matrix, boxes: IoU >= {iou_threshold:g}, score >= {score_threshold:g}", fontsize=10)
    _save(fig, path)


def plot_errors(breakdown, path):
    """dAP per error kind, as horizontal bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 2.8))
    kinds = list(ERROR_KINDS)
    values = [breakdown["dap"][k] for k in kinds]
    ax.barh(range(len(kinds)), values, color="#4878cf")
    ax.set_yticks(range(len(kinds)), [f"{ERROR_NAMES[k]} ({breakdown['counts'][k]})" for k in kinds], fontsize=8)
    ax.invert_yaxis()
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.3f}", va="center", fontsize=8)
    ax.set_xlim(0, max(0.05, max(values) * 1.25))
    ap = breakdown["ap"]
    ax.set_xlabel(f"AP50 gained if fixed (bbox AP50 now {ap:.3f})" if ap is not None else "AP50 gained if fixed")
    ax.set_title("Error breakdown (after TIDE): kind (how many)", fontsize=10)
    _save(fig, path)


# ---------------------------------------------------------------------------------------
# Gallery
# ---------------------------------------------------------------------------------------

def image_index(dataset):
    """``{image_id: index}`` for ``dataset`` (a Subset or not), without decoding images where
    the dataset says its ids: a ``CocoFormatDataset`` (``entries``) or a Penn-Fudan folder
    dataset (``pairs``: its image id is its index); otherwise by reading every target."""
    from utils import unwrap_subset

    base, indices = unwrap_subset(dataset)
    if hasattr(base, "entries"):
        return {base.entries[j]["image_id"]: i for i, j in enumerate(indices)}
    if hasattr(base, "pairs"):
        return {int(j): i for i, j in enumerate(indices)}
    return {int(dataset[i][1]["image_id"]): i for i in range(len(dataset))}


def picture(dataset, i):
    """Image ``i`` of ``dataset`` as (3, H, W), without its masks where the dataset allows (half
    the gallery's time otherwise): the test transform only converts, it does not move pixels."""
    from utils import unwrap_subset

    base, indices = unwrap_subset(dataset)
    if hasattr(base, "entries") and hasattr(base, "with_masks"):  # CocoFormatDataset
        return type(base)([base.entries[indices[i]]], base.classes, None, False)[0][0]
    if hasattr(base, "pairs"):  # the Penn-Fudan folder dataset
        from pennfudan_data import read_rgb

        return read_rgb(base.pairs[indices[i]][0])
    return dataset[i][0]


def _font(size):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def draw_panel(image_hwc, boxes, texts, colours, scale, title):
    """The image upscaled by ``scale`` with labelled boxes and a title bar above."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(image_hwc)
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BICUBIC)
    bar, font = 22, _font(13)
    title_width = round(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(title, font=font)) + 8
    # a narrow image (30 px) still shows its whole title
    panel = Image.new("RGB", (max(im.width, title_width), im.height + bar), (255, 255, 255))
    panel.paste(im, (0, bar))
    draw = ImageDraw.Draw(panel)
    width = max(2, round(scale))
    draw.text((4, 3), title, fill=(0, 0, 0), font=font)
    for box, text, colour in zip(boxes, texts, colours):
        x0, y0, x1, y1 = (float(v) * scale for v in box)
        y0, y1 = y0 + bar, y1 + bar
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=width)
        tw = draw.textlength(text, font=font)
        ty = y0 - 16 if y0 - 16 >= bar else y0 + 1
        draw.rectangle((x0, ty, x0 + tw + 4, ty + 15), fill=colour)
        draw.text((x0 + 2, ty), text, fill=(255, 255, 255), font=font)
    return panel


def gallery_figure(image_hwc, image, names, iou_threshold, score_threshold, long_side=GALLERY_LONG_SIDE,
                   max_side=GALLERY_MAX_SIDE):
    """Ground truth (left: green found, orange missed) beside the predictions scoring at least
    ``score_threshold`` (right: blue right class, red false detection or wrong class), as one PIL
    image; each panel's long side scaled into ``long_side``..``max_side``."""
    from PIL import Image

    pairs, missed, false, ignored = match_image(image, iou_threshold, score_threshold)
    side = max(image_hwc.shape[:2])
    scale = long_side / side if side < long_side else max_side / side if side > max_side else 1.0
    name = (lambda c: names[c - 1] if 1 <= c <= len(names) else str(c))
    missed_set = set(missed)
    gt = [j for j in range(len(image["gt_labels"]))]
    left = draw_panel(image_hwc, image["gt_boxes"][gt],
                      [name(image["gt_labels"][j]) + (" (crowd)" if image["gt_crowd"][j] else "") for j in gt],
                      [COLOURS["missed"] if j in missed_set else COLOURS["truth"] for j in gt], scale,
                      f"ground truth: {len(gt)} ({len(missed)} missed)")
    right_ok = {d for d, g in pairs if image["det_labels"][d] == image["gt_labels"][g]}
    shown = [d for d, _ in pairs] + false + ignored
    shown.sort(key=lambda d: image["det_scores"][d])  # highest score drawn last, on top
    right = draw_panel(image_hwc, image["det_boxes"][shown],
                       [f"{name(image['det_labels'][d])} {image['det_scores'][d]:.2f}" for d in shown],
                       [COLOURS["correct"] if d in right_ok or d in ignored else COLOURS["wrong"] for d in shown],
                       scale, f"predictions >= {score_threshold:g}: {len(shown)}")
    both = Image.new("RGB", (left.width + right.width + 8, left.height), (255, 255, 255))
    both.paste(left, (0, 0))
    both.paste(right, (left.width + 8, 0))
    return both


def _as_hwc_uint8(image):
    """A dataset's (3, H, W) image (float 0-1 or uint8) as an (H, W, 3) uint8 array."""
    image = np.asarray(image.cpu() if hasattr(image, "cpu") else image)[:3]
    if image.dtype != np.uint8:
        image = (np.clip(image.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    if image.shape[0] == 1:
        image = np.repeat(image, 3, axis=0)
    return np.ascontiguousarray(image.transpose(1, 2, 0))


def write_gallery(folder, images, per_image, dataset, names, iou_threshold, score_threshold, count=GALLERY_SIZE):
    """JPEGs of the ``count`` worst images (most missed + false + wrong-class, then by id) in
    ``folder``; returns ``[(file name, image_id, dict(missed, false, confused))]`` in that order."""
    os.makedirs(folder, exist_ok=True)
    index = image_index(dataset)
    order = sorted(range(len(images)), key=lambda n: (-sum(per_image[n].values()), images[n]["image_id"]))
    written = []
    for rank, n in enumerate(order[:count]):
        image = images[n]
        if image["image_id"] not in index:
            continue
        pixels = _as_hwc_uint8(picture(dataset, index[image["image_id"]]))
        figure = gallery_figure(pixels, image, names, iou_threshold, score_threshold)
        file_name = f"{rank + 1:03d}-image{image['image_id']}.jpg"
        figure.save(os.path.join(folder, file_name), format="JPEG", quality=85)
        written.append((file_name, image["image_id"], per_image[n]))
    return written


# ---------------------------------------------------------------------------------------
# The run, and the HTML page
# ---------------------------------------------------------------------------------------

def device_name(device):
    """'NVIDIA H200' or the CPU's model name and core count."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    from argument_checks import read_cpuinfo

    try:
        name = read_cpuinfo()[0] or ""
    except OSError:
        name = ""
    return f"{name or platform.processor() or 'CPU'}, {os.cpu_count()} cores"


def run_info(data_path, test_data_path, classes, model_name, recipe, device, records=None, weights=None,
             num_test_images=None):
    """What the report's first table shows: ``[(label, text)]`` and the final/best metrics."""
    rows = [("data", data_path + (f" (tested on {test_data_path})" if test_data_path else "")),
            ("test images", str(num_test_images) if num_test_images is not None else "?"),
            ("classes", ", ".join(c["name"] for c in classes)),
            ("model", model_name + (f" from {weights}" if weights else "")),
            ("recipe", ", ".join(f"{k}={v}" for k, v in recipe.items() if v is not None)),
            ("device", device_name(device)),
            ("written", time.strftime("%Y-%m-%d %H:%M:%S"))]
    records = [r for r in (records or []) if "bbox" in r]
    if records:
        total = sum(r.get("epoch_time_s", 0) for r in records)
        rows.append(("training", f"{len(records)} epoch(s) recorded, {total:.0f} s"))
        key = "segm" if "segm" in records[-1] else "bbox"
        best = max(records, key=lambda r: r[key]["AP"])
        rows.append((f"best {key} AP", f"{best[key]['AP']:.3f} at epoch {best['epoch']}"))
    return rows


def _table(header, rows):
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header) if any(header) else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{'<tr>' + head + '</tr>' if head else ''}{body}</table>"


def _img(src, alt):
    return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}">'


STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1150px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;
overflow-wrap:anywhere}
th{background:#f0f0f0}img{max-width:100%;border:1px solid #ddd}h2{margin-top:1.6em}
.g{display:inline-block;margin:6px;vertical-align:top;font-size:13px}.note{color:#555;font-size:14px}"""


def render_html(info_rows, summary, figures, breakdown, matrix, names, gallery, iou_threshold, score_threshold,
                num_images):
    """The page; image paths are relative to the report folder."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Evaluation report</title>"
             f"<style>{STYLE}</style></head><body><h1>Evaluation report</h1>",
             "<h2>The run</h2>", _table(("", ""), info_rows)]
    metric_rows = [(t, *(f"{summary[t][k]:.3f}" for k in ("AP", "AP50", "AP75", "AR100"))) for t in ("bbox", "segm")
                   if t in summary]
    parts += ["<h2>Final metrics (COCO)</h2>", _table(("", "AP", "AP50", "AP75", "AR100"), metric_rows)]
    per_class = summary.get("per_class", {})
    columns = [("bbox", "bbox AP"), ("bbox50", "bbox AP50")] + (
        [("segm", "segm AP")] if "segm" in summary else [])
    parts += ["<h2>Per-class AP</h2>",
              _table(["class"] + [t for _, t in columns],
                     [[n] + [f"{row.get(k, -1.0):.3f}" for k, _ in columns] for n, row in per_class.items()]),
              "<p class='note'>-1: no object of that class in the test images.</p>"]
    if "curves" in figures:
        parts += ["<h2>Training curves</h2>", _img(figures["curves"], "training loss and AP per epoch")]
    if "pr" in figures:
        parts += ["<h2>Precision-recall per class</h2>", _img(figures["pr"], "precision-recall curves"),
                  "<p class='note'>pycocotools' interpolated precision at its 101 recall points (all areas, "
                      "100 detections per image); the legend gives each class's AP at that IoU.</p>"]
    parts += [f"<h2>Confusion matrix (boxes, IoU &ge; {iou_threshold:g}, score &ge; {score_threshold:g})</h2>",
              _img(figures["confusion"], "confusion matrix"),
              _table(["true \\ predicted"] + list(names) + ["background (missed)"],
                     [[n] + list(map(int, row)) for n, row in zip(list(names) + ["background (false)"], matrix)]),
              "<p class='note'>Each detection scoring at least the threshold is matched to at most one object "
              "(IoU at least the threshold, its own class first, highest score first). Row <i>background</i>: "
              "false detections; column <i>background</i>: missed objects. Crowd regions count as neither.</p>"]
    dap_rows = [(ERROR_NAMES[k], breakdown["counts"][k], f"{breakdown['dap'][k]:.3f}") for k in ERROR_KINDS]
    ap = breakdown["ap"]
    parts += ["<h2>Error breakdown (after TIDE)</h2>", _img(figures["errors"], "error breakdown"),
              _table(("kind", "how many", "AP50 gained if fixed"), dap_rows),
              f"<p class='note'>Boxes, all scores, foreground IoU {breakdown['fg_iou']:g}, background IoU "
              f"{breakdown['bg_iou']:g}; bbox AP50 as is: {'n/a' if ap is None else f'{ap:.3f}'}. Definitions: "
              "Bolya et al., &ldquo;TIDE: A General Toolbox for Identifying Object Detection Errors&rdquo;, "
              "ECCV 2020 (docs/report.md). The gains do not add up: fixing one kind changes what the others "
              "cost.</p>"]
    parts += [f"<h2>Gallery: {len(gallery)} of {num_images} test images, worst first</h2>",
              "<p class='note'>Left: ground truth (green: found, orange: missed). Right: predictions scoring at "
              f"least {score_threshold:g} (blue: right class, red: false detection or wrong class). Boxes "
              "only.</p>"]
    for file_name, image_id, errors in gallery:
        caption = (f"image {image_id}: {errors['missed']} missed, {errors['false']} false, "
                   f"{errors['confused']} wrong class")
        parts.append(f"<div class='g'>{_img('gallery/' + file_name, caption)}<br>{html.escape(caption)}</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------

def _build(folder, coco_evaluator, dataset_test, classes, info_rows, summary, score_threshold, iou_threshold,
           records, gallery_size, curves_png):
    """Everything into ``folder`` (empty or holding only ``earlier/``); returns report.json's content."""
    import outputs

    names = [c["name"] for c in classes]
    figures = {}
    if curves_png and os.path.isfile(curves_png):  # the run's own, just written: a copy costs nothing
        shutil.copyfile(curves_png, os.path.join(folder, "curves.png"))
        figures["curves"] = "curves.png"
    elif records:
        outputs.plot_curves(records, os.path.join(folder, "curves.png"))
        figures["curves"] = "curves.png"
    pr = {t: pr_curves(ev, classes) for t, ev in coco_evaluator.coco_eval.items() if t in ("bbox", "segm") and ev.eval}
    if pr:
        plot_pr(pr, os.path.join(folder, "pr.png"))
        figures["pr"] = "pr.png"
    bbox = coco_evaluator.coco_eval["bbox"]
    images = images_from_coco(bbox.cocoGt, bbox.cocoDt, bbox.params.imgIds)
    matrix, per_image = confusion_matrix(images, len(classes), iou_threshold, score_threshold)
    plot_confusion(matrix, names, iou_threshold, score_threshold, os.path.join(folder, "confusion.png"))
    figures["confusion"] = "confusion.png"
    breakdown = error_breakdown(images, len(classes))
    plot_errors(breakdown, os.path.join(folder, "errors.png"))
    figures["errors"] = "errors.png"
    gallery = write_gallery(os.path.join(folder, "gallery"), images, per_image, dataset_test, names, iou_threshold,
                            score_threshold, gallery_size)
    page = render_html(info_rows, summary, figures, breakdown, matrix, names, gallery, iou_threshold,
                       score_threshold, len(images))
    with open(os.path.join(folder, "report.html"), "w") as f:
        f.write(page)
    data = dict(run=dict(info_rows), metrics=summary, iou_threshold=iou_threshold, score_threshold=score_threshold,
                confusion_matrix=dict(labels=names + ["background"], counts=matrix.tolist()),
                errors=breakdown, gallery=[dict(file="gallery/" + f, image_id=int(i), **e) for f, i, e in gallery])
    with open(os.path.join(folder, "report.json"), "w") as f:
        json.dump(data, f, indent=1, default=float)
    return data


def remove_partial(output_dir):
    """Remove a ``report.partial/`` left by a stopped process, but an ``earlier/`` in it (taken from
    report/ by the renames that were cut short: the earlier reports are never deleted)."""
    partial = os.path.join(output_dir, PARTIAL)
    if not os.path.isdir(partial):
        return
    for entry in os.listdir(partial):
        if entry != EARLIER:
            path = os.path.join(partial, entry)
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
    if not os.listdir(partial):
        os.rmdir(partial)


def _free_name(folder, stamp):
    target, n = os.path.join(folder, stamp), 1
    while os.path.exists(target):
        n += 1
        target = os.path.join(folder, f"{stamp}-{n}")
    return target


def archive_report(output_dir):
    """``--overwrite``: the earlier run's report moves to ``report/earlier/<its time>/``, so the
    report/ left in place is never the replaced run's."""
    final = os.path.join(output_dir, NAME)
    if not os.path.isfile(os.path.join(final, "report.html")):
        return
    with NoInterrupt():
        target = _free_name(os.path.join(final, EARLIER), _stamp(final))
        try:
            os.makedirs(target)
            for entry in os.listdir(final):
                if entry != EARLIER:
                    os.replace(os.path.join(final, entry), os.path.join(target, entry))
        except OSError as e:  # report/ made by another user, or read-only
            raise TutorialError(f"{final}: cannot move the replaced run's report to {target} ({e.strerror or e}). "
                                f"Make {final} writable or remove it.") from None


def _stamp(folder):
    """The time ``folder``'s report was written, for its name under earlier/."""
    html_path = os.path.join(folder, "report.html")
    when = os.path.getmtime(html_path if os.path.exists(html_path) else folder)
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(when))


def write_report(output_dir, coco_evaluator, dataset_test, classes, info_rows, summary, score_threshold=0.5,
                 iou_threshold=0.5, records=None, gallery_size=GALLERY_SIZE, curves_png=None):
    """``output_dir/report/``: report.html, report.json, its figures and gallery/. Returns the
    path of report.html. An earlier report there moves to ``report/earlier/<its time>/``.

    ``summary``: ``outputs.evaluation_summary``'s dict; ``info_rows``: ``run_info``'s rows;
    ``records``: metrics.json's epochs, drawn as curves.png unless ``curves_png`` (that file) is
    given to copy; neither: no curves."""
    started = time.time()
    final, partial = os.path.join(output_dir, NAME), os.path.join(output_dir, PARTIAL)
    for path in (final, partial):  # checked before the work, so the message comes at once
        if os.path.lexists(path) and not os.path.isdir(path):
            raise TutorialError(f"{path}: a file, where the report's folder goes; the report was not written. Move "
                                f"or remove it (then --test-only writes the report).")
    remove_partial(output_dir)
    os.makedirs(partial, exist_ok=True)
    try:
        _build(partial, coco_evaluator, dataset_test, classes, info_rows, summary, score_threshold, iou_threshold,
               records, gallery_size, curves_png)
    except BaseException:
        if not os.path.isdir(os.path.join(partial, EARLIER)):
            shutil.rmtree(partial, ignore_errors=True)
        raise
    with NoInterrupt():
        moved = []  # (from, to) of each rename, undone in reverse if a later one fails
        try:
            if os.path.isdir(final):
                archive = os.path.join(partial, EARLIER)
                if os.path.isdir(os.path.join(final, EARLIER)) and not os.path.isdir(archive):
                    os.replace(os.path.join(final, EARLIER), archive)
                    moved.append((os.path.join(final, EARLIER), archive))
                os.makedirs(archive, exist_ok=True)
                if os.listdir(final):  # else only earlier/ was there (--overwrite moved the report)
                    target = _free_name(archive, _stamp(final))
                    os.replace(final, target)
                    moved.append((final, target))
                else:
                    os.rmdir(final)
            os.replace(partial, final)
        except OSError as e:  # report/ made by another user, or read-only: the earlier report stays as it was
            if moved:
                os.makedirs(final, exist_ok=True)  # emptied and removed above: its earlier/ goes back in
            for source, target in reversed(moved):
                try:
                    os.replace(target, source)
                except OSError:
                    break
            remove_partial(output_dir)
            raise TutorialError(f"{final}: cannot put the new report in place ({e.strerror or e}); the report was not "
                                f"written, and an earlier one there is as it was. Make {final} writable or remove it "
                                f"(then --test-only writes the report).") from None
    path = os.path.join(final, "report.html")
    print(f"Saved the evaluation report to {path} ({time.time() - started:.1f} s)")
    return path
