"""The figures: curves.png (``plot_curves``), the tutorial's first and final figures
(``save_preview``; ``draw_predictions``, ``save_final_figures``) and the failure report's
precision-recall, confusion-matrix and error-breakdown figures (``plot_pr``, ``plot_confusion``,
``plot_errors``), each written whole or not at all.
"""

import os
import warnings

import numpy as np
import torch
from pycocotools import mask as mask_util
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from finetune.data.coco import CocoFormatDataset
from finetune.data.image_files import read_rgb
from finetune.data.pennfudan import PENNFUDAN_CLASSES, pair_images_and_masks, read_instance_mask
from finetune.outputs.analysis import ERROR_KINDS, ERROR_NAMES, row_normalised
from finetune.outputs.writing import save_png
from utils import atomic_write, unwrap_subset


def _pyplot():
    """matplotlib's pyplot, drawing without a display (the Agg backend)."""
    # imported here, not at the top: matplotlib is heavy to import and only the figures need it
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _save_figure(fig, path, dpi=100):
    """Laid out, written whole or not at all (``utils.atomic_write``) and closed; a class name in a
    script the font lacks (CJK) shows as boxes there without a warning per glyph (the HTML report
    and JSON files keep the name)."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Glyph .* missing from", UserWarning)
            fig.tight_layout()
            atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    finally:
        _pyplot().close(fig)


def plot_curves(records, path):
    """Training loss per iteration and COCO AP per epoch, side by side."""
    plt = _pyplot()
    fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(11, 4))
    losses = [x for r in records for x in r.get("iteration_losses", [])]
    ax_loss.plot(range(1, len(losses) + 1), losses, lw=0.8, label="loss (sum of terms)")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_yscale("log")
    ax_loss.set_title("Training loss")
    ax_loss.grid(alpha=0.3)
    epochs = [r["epoch"] for r in records]
    for iou in ("bbox", "segm"):
        if all(iou in r for r in records):
            ax_ap.plot(epochs, [r[iou]["AP"] for r in records], "o-", label=f"{iou} AP@[.5:.95]")
            ax_ap.plot(epochs, [r[iou]["AP50"] for r in records], "s--", label=f"{iou} AP@.5")
    ax_ap.set_xlabel("epoch")
    ax_ap.set_ylabel("COCO average precision")
    ax_ap.set_ylim(0, 1)
    ax_ap.set_xticks(epochs)
    ax_ap.set_title("Test-set AP per epoch")
    ax_ap.grid(alpha=0.3)
    if ax_ap.get_lines():
        ax_ap.legend()
    else:
        ax_ap.text(0.5, 0.5, "no test set (--test-size 0)", ha="center", va="center", transform=ax_ap.transAxes)
    _save_figure(fig, path)


# One colour per class (boxes and masks) when there are several; one class keeps the tutorial's
# red boxes and blue masks.
PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128), (170, 110, 40), (128, 0, 0)]


def draw_predictions(image, prediction, score_threshold=0.5, classes=None):
    """The tutorial's final figure: boxes with ``name: score`` and masks drawn over the image.

    ``image``: uint8, or float (scaled to 0-255 as the tutorial does). ``classes`` names label
    k + 1 (default: one class, "pedestrian"). Masks: full-image ``masks`` (drawn where > 0.7, as
    the tutorial) or ``masks_rle`` (``mask_paste.compact_masks``; the encoded mask > 0.5), merged
    per class, so a big photo costs its own size, not its size times the detections.
    """

    classes = classes or PENNFUDAN_CLASSES
    if image.dtype != torch.uint8:
        image = (255.0 * (image - image.min()) / (image.max() - image.min() + 1e-8)).to(torch.uint8)
    image = image[:3]
    keep = torch.nonzero(prediction["scores"] >= score_threshold).flatten().tolist()
    if not keep:
        return image
    labels = [int(prediction["labels"][j]) for j in keep]
    names = [classes[k - 1]["name"] if 1 <= k <= len(classes) else str(k) for k in labels]
    one_class = len(classes) == 1
    box_colours = ["red" if one_class else PALETTE[(k - 1) % len(PALETTE)] for k in labels]
    out = draw_bounding_boxes(image, prediction["boxes"][keep].long(),
                              [f"{n}: {float(prediction['scores'][j]):.3f}" for n, j in zip(names, keep)],
                              colors=box_colours, width=2)
    mask_colours = ["blue" if one_class else PALETTE[(k - 1) % len(PALETTE)] for k in labels]
    if "masks" in prediction:
        masks = (prediction["masks"][keep] > 0.7).squeeze(1)
        out = draw_segmentation_masks(out, masks, alpha=0.5, colors=mask_colours)
    elif "masks_rle" in prediction:
        for label in sorted(set(labels)):  # draw_segmentation_masks' blend (alpha 0.5), on the masked pixels only
            rles = [prediction["masks_rle"][j] for j, k in zip(keep, labels) if k == label]
            union_rle = mask_util.merge([dict(r, counts=r["counts"].encode()) for r in rles], intersect=False)
            union = torch.from_numpy(mask_util.decode(union_rle).astype(bool))  # one image-sized mask
            colour = torch.tensor((0.0, 0.0, 255.0) if one_class else PALETTE[(label - 1) % len(PALETTE)])[:, None]
            out[:, union] = (out[:, union].float() * 0.5 + colour * 0.5).to(torch.uint8)
    return out


def save_preview(dataset_root, path, dataset=None):
    """The tutorial's first figure: one image and its instance mask side by side.

    ``dataset`` is ``load_datasets``' ``preview``: None for a Penn-Fudan folder, which shows its
    first image and mask file; otherwise a ``CocoFormatDataset``, whose first image is shown with
    its instances numbered 1..N (crowd regions left out).
    """
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 5))
    if dataset is None:
        img_path, mask_path = pair_images_and_masks(dataset_root)[0]
        image, instances = read_rgb(img_path), read_instance_mask(mask_path)
        titles = os.path.basename(img_path), os.path.basename(mask_path) + " (value k = k-th pedestrian)"
    else:
        entry = dataset.entries[0]
        image, target = CocoFormatDataset([entry], dataset.classes, None, dataset.with_masks)[0]
        masks = target["masks"] if "masks" in target else torch.zeros((0,) + tuple(image.shape[-2:]))
        instances = torch.zeros(image.shape[-2:], dtype=torch.int64)
        for k, m in enumerate(masks, start=1):
            instances[m.bool()] = k
        titles = entry["file_name"], f"{len(masks)} instance(s), value k = k-th"
    a.imshow(image.permute(1, 2, 0).numpy())
    b.imshow(instances.numpy(), cmap="tab10", interpolation="nearest")
    a.set_title(titles[0])
    b.set_title(titles[1])
    for ax in (a, b):
        ax.axis("off")
    _save_figure(fig, path)


def to_cpu(prediction):
    """A prediction's tensors on the CPU (``masks_rle`` is a list already)."""
    return {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in prediction.items()}


@torch.inference_mode()
def save_prediction_figures(model, dataset_test, device, out_dir, score_threshold, count=4, classes=None):
    """Overlays for a few test images; FudanPed00046 (the tutorial's figure) first when present."""
    os.makedirs(out_dir, exist_ok=True)
    base, base_indices = unwrap_subset(dataset_test)
    order = list(range(len(dataset_test)))
    names = [base.imgs[j] for j in base_indices]
    if "FudanPed00046.png" in names:
        order.insert(0, order.pop(names.index("FudanPed00046.png")))
    model.eval()
    written = []
    for i in order[:count]:
        image, _ = dataset_test[i]
        prediction = model([image.to(device)])[0]
        path = os.path.join(out_dir, names[i])
        save_png(draw_predictions(image, to_cpu(prediction), score_threshold, classes), path)
        written.append(path)
    return written


def save_final_figures(model, dataset_test, device, output_dir, score_threshold, classes=None):
    """The tutorial's final figure for a few test images, in ``output_dir/predictions``."""
    if len(dataset_test) == 0:
        return []
    written = save_prediction_figures(model, dataset_test, device, os.path.join(output_dir, "predictions"),
                                      score_threshold, classes=classes)
    if written:
        print(f"Saved the prediction figure(s) to {os.path.dirname(written[0])}/ "
              f"and curves.png, metrics.json, checkpoint.pth to {output_dir}/")
    return written


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
    _save_figure(fig, path, dpi=80)


def plot_confusion(matrix, names, iou_threshold, score_threshold, path, matched_by="boxes"):
    """Counts and row-normalised fractions side by side; ``matched_by`` ("boxes" or "masks") names the IoU."""
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
    fig.suptitle(f"Confusion matrix, {matched_by}: IoU >= {iou_threshold:g}, score >= {score_threshold:g}",
                 fontsize=10)
    _save_figure(fig, path, dpi=80)


def plot_errors(breakdown, path, masks=None):
    """dAP per error kind, as horizontal bars; with ``masks`` (the same breakdown by mask IoU) a
    second bar per kind beside the box one, so the kinds where the two differ stand out."""
    plt = _pyplot()
    series = [("boxes", "bbox", breakdown, "#4878cf")] + ([("masks", "segm", masks, "#d65f5f")] if masks else [])
    fig, ax = plt.subplots(figsize=(6, 2.8 if masks is None else 3.6))
    kinds = list(ERROR_KINDS)
    height = 0.8 / len(series)
    for n, (label, _, numbers, colour) in enumerate(series):
        values = [numbers["dap"][k] for k in kinds]
        where = [i + (n - (len(series) - 1) / 2) * height for i in range(len(kinds))]
        ax.barh(where, values, height=height, color=colour, label=label if masks else None)
        for y, v in zip(where, values):
            ax.text(v, y, f" {v:.3f}", va="center", fontsize=7 if masks else 8)
    counts = [" / ".join(str(numbers["counts"][k]) for _, _, numbers, _ in series) for k in kinds]
    ax.set_yticks(range(len(kinds)), [f"{ERROR_NAMES[k]} ({c})" for k, c in zip(kinds, counts)], fontsize=8)
    ax.invert_yaxis()
    top = max(numbers["dap"][k] for _, _, numbers, _ in series for k in kinds)
    ax.set_xlim(0, max(0.05, top * 1.25))
    now = [f"{iou} AP50 now {numbers['ap']:.3f}" for _, iou, numbers, _ in series if numbers["ap"] is not None]
    gap = "\n" if len(now) > 1 else " "  # two APs do not fit on one line under the bars
    ax.set_xlabel("AP50 gained if fixed" + (f"{gap}({', '.join(now)})" if now else ""))
    if masks:
        ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Error breakdown (after TIDE): kind (how many" + (": boxes / masks)" if masks else ")"), fontsize=10)
    _save_figure(fig, path, dpi=80)
