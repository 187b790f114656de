"""A run's COCO numbers by name: the twelve COCOeval statistics, the AP per class, the evaluation
summary and one record per epoch, saved as metrics.json with curves.png (``save_epoch_outputs``).
"""

import os

import numpy as np

from finetune.data.pennfudan import PENNFUDAN_CLASSES
from finetune.outputs.plots import plot_curves
from finetune.outputs.writing import write_json_atomic

COCO_STAT_NAMES = [
    "AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
    "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large",
]


def coco_summary(coco_evaluator):
    """{"bbox": {"AP": ..., ...}, "segm": {...}}: the 12 COCO numbers of each IoU type, named."""
    return {iou: dict(zip(COCO_STAT_NAMES, (float(x) for x in ev.stats)))
            for iou, ev in coco_evaluator.coco_eval.items()}


def per_class_ap(coco_evaluator, classes):
    """``{name: {"bbox": AP, "bbox50": AP50, "segm": AP}}`` from the accumulated COCO evaluation
    (all areas, 100 detections), -1 for a class without ground truth; label k + 1 is ``classes[k]``."""

    table = {c["name"]: {} for c in classes}
    for iou, ev in coco_evaluator.coco_eval.items():
        precision = ev.eval["precision"]  # [IoU thresholds, recall, category, area, max detections]
        for k, cat_id in enumerate(ev.params.catIds):
            if not 1 <= cat_id <= len(classes):
                continue
            name = classes[cat_id - 1]["name"]
            every, at50 = precision[:, :, k, 0, -1], precision[0, :, k, 0, -1]
            table[name][iou] = float(np.mean(every[every > -1])) if (every > -1).any() else -1.0
            if iou == "bbox":
                table[name]["bbox50"] = float(np.mean(at50[at50 > -1])) if (at50 > -1).any() else -1.0
    return table


def evaluation_summary(coco_evaluator, classes):
    """The named COCO numbers and, printed after the COCO tables, the per-class AP table."""
    summary = coco_summary(coco_evaluator)
    summary["per_class"] = per_class_ap(coco_evaluator, classes)
    columns = [("bbox", "bbox AP"), ("bbox50", "bbox AP50")] + ([("segm", "segm AP")] if "segm" in summary else [])
    width = max(12, *(len(name) for name in summary["per_class"]))
    print("Per-class AP:")
    print(f"  {'class':{width}s}" + "".join(f"{title:>11s}" for _, title in columns))
    for name, row in summary["per_class"].items():
        print(f"  {name:{width}s}" + "".join(f"{row.get(key, -1.0):11.3f}" for key, _ in columns))
    if any(v == -1.0 for row in summary["per_class"].values() for v in row.values()):
        print("  (-1: no object of that class in the test images)")
    return summary


def epoch_record(epoch, lr, train_time, epoch_time, metric_logger, iteration_losses, coco_evaluator, classes=None):
    """One epoch's line of metrics.json: mean loss terms, lr, times, every iteration's loss, COCO numbers."""
    record = dict(epoch=epoch, lr=lr, train_time_s=round(train_time, 2), epoch_time_s=round(epoch_time, 2),
                  train={k: m.global_avg for k, m in metric_logger.meters.items() if k != "lr"},
                  iteration_losses=[r["loss"] for r in iteration_losses])
    if coco_evaluator is not None:  # None: no test set (--test-size 0)
        record.update(evaluation_summary(coco_evaluator, classes or PENNFUDAN_CLASSES))
    return record


def save_epoch_outputs(output_dir, records):
    """metrics.json and curves.png, rewritten after every epoch."""
    write_json_atomic(records, os.path.join(output_dir, "metrics.json"))
    plot_curves(records, os.path.join(output_dir, "curves.png"))
