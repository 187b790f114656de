"""Where the model fails: ``output/report/`` with ``report.html`` and its figures.

Written after the last evaluation of a run and after ``--test-only``, from what that
evaluation already holds (``CocoEvaluator.coco_eval[t]``: ``cocoGt``, ``cocoDt`` with every
detection, ``eval["precision"]``); the model is not run again. Parts:

* precision-recall curves per class at IoU 0.5 and 0.75 (pycocotools' own numbers);
* a confusion matrix over the K classes plus background (``finetune.outputs.analysis.confusion_matrix``);
* an error breakdown after TIDE (``finetune.outputs.analysis.error_breakdown``): the AP each kind
  of error costs;
* both again by mask IoU (the segm evaluation's RLEs) beside the box ones, where the model and the
  data have masks (``mask_images``);
* a gallery of the test images, worst first, ground truth beside the predictions
  (``finetune.outputs.gallery``);
* the run, its final and best metrics, the per-class table.

The report is built in ``report.partial/`` and renamed into place, so ``report/`` is always a
whole report; an earlier one is moved into ``report/earlier/<time>/``, never deleted.
"""

import html
import json
import os
import shutil
import time
from typing import NamedTuple

from finetune.errors import TutorialError
from finetune.hardware import describe_device
from finetune.outputs import plots
from finetune.outputs.analysis import (
    ERROR_KINDS,
    ERROR_NAMES,
    confusion_matrix,
    error_breakdown,
    images_from_coco,
    pr_curves,
)
from finetune.outputs.gallery import GALLERY_SIZE, write_gallery
from finetune.outputs.plots import plot_confusion, plot_errors, plot_pr
from finetune.outputs.writing import NoInterrupt
from utils import unwrap_subset

NAME, PARTIAL, EARLIER = "report", "report.partial", "earlier"  # output-dir/report/, while written, old ones


def run_info(data_path, test_data_path, classes, model_name, recipe, device, records=None, weights=None,
             num_test_images=None):
    """What the report's first table shows: ``[(label, text)]`` and the final/best metrics."""
    rows = [("data", data_path + (f" (tested on {test_data_path})" if test_data_path else "")),
            ("test images", str(num_test_images) if num_test_images is not None else "?"),
            ("classes", ", ".join(c["name"] for c in classes)),
            ("model", model_name + (f" from {weights}" if weights else "")),
            ("recipe", ", ".join(f"{k}={v}" for k, v in recipe.items() if v is not None)),
            ("device", describe_device(device)),
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


class Analysis(NamedTuple):
    """The confusion matrix and error breakdown of one IoU kind (boxes, or masks from segm IoU)."""
    matrix: object  # confusion_matrix's (K + 1) x (K + 1) counts
    breakdown: dict  # error_breakdown's dict


def _matrix_table(matrix, names):
    return _table(["true \\ predicted"] + list(names) + ["background (missed)"],
                  [[n] + list(map(int, row)) for n, row in zip(list(names) + ["background (false)"], matrix)])


def _confusion_html(figures, analyses, names, iou_threshold, score_threshold):
    """The confusion matrix section: boxes (figure and table), then masks where ``analyses`` has them."""
    parts = [f"<h2>Confusion matrix (boxes, IoU &ge; {iou_threshold:g}, score &ge; {score_threshold:g})</h2>",
             _img(figures["confusion"], "confusion matrix"), _matrix_table(analyses["boxes"].matrix, names)]
    if "masks" in analyses:
        parts += [f"<h3>Masks (segm IoU &ge; {iou_threshold:g}, score &ge; {score_threshold:g})</h3>",
                  _img(figures["confusion_masks"], "confusion matrix by masks"),
                  _matrix_table(analyses["masks"].matrix, names),
                  "<p class='note'>The same matching on the IoU of the predicted masks (mask &gt; 0.5) with the "
                  "objects' masks, as segm AP scores them: a box that fits an object whose mask does not shows "
                  "here as a missed object and a false detection.</p>"]
    parts.append("<p class='note'>Each detection scoring at least the threshold is matched to at most one object "
                 "(IoU at least the threshold, its own class first, highest score first). Row <i>background</i>: "
                 "false detections; column <i>background</i>: missed objects. Crowd regions count as neither.</p>")
    return parts


def _ap_text(ap):
    return "n/a" if ap is None else f"{ap:.3f}"


def _errors_html(figures, analyses):
    """The error breakdown section: boxes, with masks beside them (more columns) where there are masks."""
    boxes = analyses["boxes"].breakdown
    kinds = [k for k in ("boxes", "masks") if k in analyses]
    header = ["kind"] + [f"{k}: {h}" if len(kinds) > 1 else h for k in kinds
                         for h in ("how many", "AP50 gained if fixed")]
    rows = [[ERROR_NAMES[e]] + [v for k in kinds for v in (analyses[k].breakdown["counts"][e],
                                                            f"{analyses[k].breakdown['dap'][e]:.3f}")]
            for e in ERROR_KINDS]
    as_is = f"bbox AP50 as is: {_ap_text(boxes['ap'])}" + (
        f", segm AP50 as is: {_ap_text(analyses['masks'].breakdown['ap'])}" if "masks" in analyses else "")
    return ["<h2>Error breakdown (after TIDE)</h2>",
            _img(figures["errors"], f"error breakdown ({' and '.join(kinds)})"),
            _table(header, rows),
            f"<p class='note'>{' and '.join(kinds).capitalize()}, all scores, foreground IoU {boxes['fg_iou']:g}, "
            f"background IoU {boxes['bg_iou']:g}; {as_is}. Definitions: "
            "Bolya et al., &ldquo;TIDE: A General Toolbox for Identifying Object Detection Errors&rdquo;, "
            "ECCV 2020 (docs/report.md). The gains do not add up: fixing one kind changes what the others "
            "cost.</p>"]


def render_html(info_rows, summary, figures, analyses, names, gallery, iou_threshold, score_threshold, num_images):
    """The page; image paths are relative to the report folder. ``analyses``: ``{"boxes": Analysis}``,
    and ``"masks"`` where the model and the data have masks."""
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
    parts += _confusion_html(figures, analyses, names, iou_threshold, score_threshold)
    parts += _errors_html(figures, analyses)
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


def mask_images(coco_evaluator, dataset_test):
    """``images_from_coco``'s dicts with masks, from the segm evaluation; None where there is none
    (a box-only model) or the data has no masks (box-only data: its "masks" are its boxes)."""
    segm = coco_evaluator.coco_eval.get("segm")
    if segm is None or not getattr(unwrap_subset(dataset_test)[0], "with_masks", True):
        return None
    if not all("segmentation" in a for a in segm.cocoGt.anns.values()):
        return None
    return images_from_coco(segm.cocoGt, segm.cocoDt, segm.params.imgIds, masks=True)


class ReportInputs(NamedTuple):
    """What ``write_report`` draws the report from, and how."""
    coco_evaluator: object  # the evaluation's CocoEvaluator (coco_eval[t]: cocoGt, cocoDt, eval)
    dataset_test: object  # the test images, for the gallery
    classes: list  # [{"id", "name"}] of labels 1..K
    info_rows: list  # run_info's rows
    summary: dict  # finetune.outputs.metrics.evaluation_summary's dict
    score_threshold: float = 0.5  # detections counted in the confusion matrix and drawn in the gallery
    iou_threshold: float = 0.5  # a detection matches an object from this IoU on
    records: list | None = None  # metrics.json's epochs, drawn as curves.png unless curves_png is given
    gallery_size: int = GALLERY_SIZE  # test images in the gallery
    curves_png: str | None = None  # the run's curves.png, copied; neither: no curves


def _build(folder, inputs):
    """Everything into ``folder`` (empty or holding only ``earlier/``); returns report.json's content."""

    (coco_evaluator, dataset_test, classes, info_rows, summary, score_threshold, iou_threshold, records,
     gallery_size, curves_png) = inputs
    names = [c["name"] for c in classes]
    figures = {}
    if curves_png and os.path.isfile(curves_png):  # the run's own, just written: a copy costs nothing
        shutil.copyfile(curves_png, os.path.join(folder, "curves.png"))
        figures["curves"] = "curves.png"
    elif records:
        plots.plot_curves(records, os.path.join(folder, "curves.png"))
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
    analyses = dict(boxes=Analysis(matrix, breakdown))
    with_masks = mask_images(coco_evaluator, dataset_test)
    if with_masks is not None:
        analyses["masks"] = Analysis(confusion_matrix(with_masks, len(classes), iou_threshold, score_threshold)[0],
                                     error_breakdown(with_masks, len(classes)))
        plot_confusion(analyses["masks"].matrix, names, iou_threshold, score_threshold,
                       os.path.join(folder, "confusion_masks.png"), matched_by="masks")
        figures["confusion_masks"] = "confusion_masks.png"
    plot_errors(breakdown, os.path.join(folder, "errors.png"),
                masks=analyses["masks"].breakdown if "masks" in analyses else None)
    figures["errors"] = "errors.png"
    gallery = write_gallery(os.path.join(folder, "gallery"), images, per_image, dataset_test, names, iou_threshold,
                            score_threshold, gallery_size)
    page = render_html(info_rows, summary, figures, analyses, names, gallery, iou_threshold, score_threshold,
                       len(images))
    with open(os.path.join(folder, "report.html"), "w") as f:
        f.write(page)
    data = dict(run=dict(info_rows), metrics=summary, iou_threshold=iou_threshold, score_threshold=score_threshold,
                confusion_matrix=dict(labels=names + ["background"], counts=matrix.tolist()),
                errors=breakdown, gallery=[dict(file="gallery/" + f, image_id=int(i), **e) for f, i, e in gallery])
    if "masks" in analyses:  # the same numbers on segm IoU; box-only runs have no such key
        data["masks"] = dict(confusion_matrix=dict(labels=names + ["background"],
                                                   counts=analyses["masks"].matrix.tolist()),
                             errors=analyses["masks"].breakdown)
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


def _check_folders(final, partial):
    """A ``TutorialError`` when a file stands where the report's folders go."""
    for path in (final, partial):  # checked before the work, so the message comes at once
        if os.path.lexists(path) and not os.path.isdir(path):
            raise TutorialError(f"{path}: a file, where the report's folder goes; the report was not written. Move "
                                f"or remove it (then --test-only writes the report).")


def _build_partial(partial, inputs):
    """The report built in ``partial``, removed again (but an ``earlier/`` in it) if that fails."""
    try:
        _build(partial, inputs)
    except BaseException:
        if not os.path.isdir(os.path.join(partial, EARLIER)):
            shutil.rmtree(partial, ignore_errors=True)
        raise


def _move_earlier(final, partial, moved):
    """An earlier ``final`` (and its ``earlier/``) moved under ``partial/earlier/``, each rename noted in ``moved``."""
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


def _put_in_place(output_dir, final, partial):
    """``partial`` renamed to ``final``, an earlier report kept under it; undone if a rename fails."""
    with NoInterrupt():
        moved = []  # (from, to) of each rename, undone in reverse if a later one fails
        try:
            if os.path.isdir(final):
                _move_earlier(final, partial, moved)
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


def write_report(output_dir, inputs):
    """``output_dir/report/``: report.html, report.json, its figures and gallery/, drawn from
    ``inputs`` (a ``ReportInputs``). Returns the path of report.html. An earlier report there
    moves to ``report/earlier/<its time>/``.

    ``inputs.summary``: ``finetune.outputs.metrics.evaluation_summary``'s dict; ``inputs.info_rows``:
    ``run_info``'s rows; ``inputs.records``: metrics.json's epochs, drawn as curves.png unless
    ``inputs.curves_png`` (that file) is given to copy; neither: no curves."""
    started = time.time()
    final, partial = os.path.join(output_dir, NAME), os.path.join(output_dir, PARTIAL)
    _check_folders(final, partial)
    remove_partial(output_dir)
    os.makedirs(partial, exist_ok=True)
    _build_partial(partial, inputs)
    _put_in_place(output_dir, final, partial)
    path = os.path.join(final, "report.html")
    print(f"Saved the evaluation report to {path} ({time.time() - started:.1f} s)")
    return path
