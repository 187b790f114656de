"""What a run leaves behind: COCO numbers by name, metrics.json, curves.png, figures, --predict files.

Every file is written whole or not at all (``utils.atomic_write``: temporary file, then rename),
so a run killed while writing keeps the previous version.
"""

import json
import os

import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from errors import TutorialError
from pennfudan_data import PENNFUDAN_CLASSES, pair_images_and_masks, read_instance_mask, read_rgb, to_rgb
from utils import atomic_write, unwrap_subset

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
    import numpy as np

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


def write_json_atomic(obj, path):
    """``json.dump`` to a temporary file, then rename over ``path``."""
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)

    atomic_write(path, write)


def write_text_atomic(text, path):
    """``text`` to a temporary file, then rename over ``path``."""
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


def _save_figure(fig, path):
    """Laid out and written; a class name in a script the font lacks (CJK) shows as boxes there
    without a warning per glyph (the HTML report and JSON files keep the name)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Glyph .* missing from", UserWarning)
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))


def plot_curves(records, path):
    """Training loss per iteration and COCO AP per epoch, side by side."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

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
    plt.close(fig)


# One colour per class (boxes and masks) when there are several; one class keeps the tutorial's
# red boxes and blue masks.
PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128), (170, 110, 40), (128, 0, 0)]


def draw_predictions(image, prediction, score_threshold=0.5, classes=None):
    """The tutorial's final figure: boxes with ``name: score`` and masks drawn over the image.

    ``image``: uint8, or float (scaled to 0-255 as the tutorial does). ``classes`` names label
    k + 1 (default: one class, "pedestrian"). Masks: full-image ``masks`` (drawn where > 0.7, as
    the tutorial) or ``masks_rle`` (``speedups.compact_masks``; the encoded mask > 0.5), merged
    per class, so a big photo costs its own size, not its size times the detections.
    """
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

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
        from pycocotools import mask as mask_util

        for label in sorted(set(labels)):  # draw_segmentation_masks' blend (alpha 0.5), on the masked pixels only
            rles = [prediction["masks_rle"][j] for j, k in zip(keep, labels) if k == label]
            union_rle = mask_util.merge([dict(r, counts=r["counts"].encode()) for r in rles], intersect=False)
            union = torch.from_numpy(mask_util.decode(union_rle).astype(bool))  # one image-sized mask
            colour = torch.tensor((0.0, 0.0, 255.0) if one_class else PALETTE[(label - 1) % len(PALETTE)])[:, None]
            out[:, union] = (out[:, union].float() * 0.5 + colour * 0.5).to(torch.uint8)
    return out


def save_png(chw_uint8, path):
    """Save a (3, H, W) uint8 tensor as a PNG, via a temporary file renamed over ``path``."""
    image = Image.fromarray(chw_uint8.permute(1, 2, 0).cpu().numpy())
    # compress_level 1: a 12-megapixel overlay in a fraction of a second instead of seconds
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG", compress_level=1))


def save_preview(dataset_root, path, dataset=None):
    """The tutorial's first figure: one image and its instance mask side by side.

    ``dataset`` is ``load_datasets``' ``preview``: None for a Penn-Fudan folder, which shows its
    first image and mask file; otherwise a ``CocoFormatDataset``, whose first image is shown with
    its instances numbered 1..N (crowd regions left out).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 5))
    if dataset is None:
        img_path, mask_path = pair_images_and_masks(dataset_root)[0]
        image, instances = read_rgb(img_path), read_instance_mask(mask_path)
        titles = os.path.basename(img_path), os.path.basename(mask_path) + " (value k = k-th pedestrian)"
    else:
        from coco_data import CocoFormatDataset

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
    plt.close(fig)


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


def list_images(paths):
    """The files to predict on, from files and folders (a folder's files sorted by name).

    Returns ``(images, skipped)``: every file whose header PIL identifies as an image, and
    ``[(path, why)]`` for the others. A file named like an image (by its extension) whose header
    is unreadable is kept, so that it is reported as a failure, not skipped in silence.
    """
    image_extensions = {ext for ext in Image.registered_extensions()}
    images, skipped = [], []
    for p in paths:
        if os.path.isdir(p):
            candidates = sorted(os.path.join(p, f) for f in os.listdir(p) if os.path.isfile(os.path.join(p, f)))
            subfolders = sorted(f for f in os.listdir(p) if os.path.isdir(os.path.join(p, f)) and f[0] != ".")
            if subfolders:  # said, so that images one level down are not missed in silence
                more = ", ..." if len(subfolders) > 3 else ""
                skipped.append((os.path.join(p, ""), f"{len(subfolders)} subfolder(s) not searched: "
                                                     f"{', '.join(subfolders[:3])}{more}; name them to predict on "
                                                     f"their images"))
        elif os.path.isfile(p):
            candidates = [p]
        else:
            raise TutorialError(f"{p}: no such file or folder to predict on.")
        for path in candidates:
            try:
                with Image.open(path):
                    pass  # the header only: cheap
                images.append(path)
            except (OSError, SyntaxError, ValueError):
                if os.path.splitext(path)[1].lower() in image_extensions or p == path:
                    images.append(path)  # looks like an image, or named on purpose: report its failure
                else:
                    skipped.append((path, "not an image PIL can read"))
    if not images:
        raise TutorialError(f"no image PIL can read in {' '.join(paths)} ({len(skipped)} other file(s)).")
    return images, skipped


def read_photo(path):
    """An image file as a (3, H, W) uint8 tensor, turned upright as its EXIF orientation says
    (phone photos), in RGB whatever its mode. Raises ``TutorialError`` naming the file."""
    from PIL import ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return F.pil_to_tensor(to_rgb(im))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise TutorialError(f"{path}: cannot decode this image ({str(e).splitlines()[0][:120]}).") from None


def output_names(paths):
    """A distinct output stem per input: the file name with its extension (``a.jpg`` and ``a.png``
    both exist in a folder), and ``-2``, ``-3`` for the same name from other folders."""
    used, stems = set(), []
    for path in paths:
        stem, n = os.path.basename(path), 1
        while stem.lower() in used:
            n += 1
            stem = f"{os.path.basename(path)}-{n}"
        used.add(stem.lower())
        stems.append(stem)
    return stems


def earlier_predictions(out_dir):
    """The files an earlier ``predict`` into ``out_dir`` wrote, as its ``images.json`` lists them
    (each image's .png/.json, then ``images.json`` and ``results.json``); [] when there is none.
    Other files there are never counted: they may be the user's own."""
    listing = os.path.join(out_dir, "images.json")
    names = []
    try:
        with open(listing) as f:
            names = [im["file_name"] for im in json.load(f)["images"]]
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError):
        names = []  # damaged: only the two shared files are known to be ours
    stems = output_names(names) if names and all(isinstance(n, str) for n in names) else []
    ours = [os.path.join(out_dir, stem + ext) for stem in stems for ext in (".png", ".json")]
    ours += [listing, os.path.join(out_dir, "results.json")]
    if not any(os.path.isfile(p) for p in ours[-2:]):
        return []
    return [p for p in ours if os.path.isfile(p)]


def check_earlier_predictions(out_dir, overwrite):
    """An earlier prediction in ``out_dir`` is an error unless ``overwrite``; returns its files."""
    earlier = earlier_predictions(out_dir) if os.path.isdir(out_dir) else []
    if earlier and not overwrite:
        raise TutorialError(f"{out_dir}/ already holds predictions (results.json). Keep them with another "
                            f"--output-dir, or replace them with --overwrite.")
    return earlier


@torch.inference_mode()
def predict(model, paths, device, out_dir, score_threshold, classes=None, overwrite=False):
    """For each image: ``out_dir/<file name>.png`` (overlay) and ``<file name>.json`` (detections:
    box ``xyxy`` and COCO ``bbox`` ``[x, y, w, h]``, score, label, the dataset's ``category_id`` and
    ``category_name``, mask as COCO RLE); and for all of them ``results.json`` (COCO results
    format) with ``images.json`` beside it, which pycocotools' ``loadRes`` takes together.
    Returns ``dict(predictions, skipped, failed)``: one record per image written, ``[(path, why)]``
    for files that are not images, ``[message]`` for images that could not be decoded (the others
    are still predicted). A Mask R-CNN with this project's speed-ups is left giving masks as RLE
    (``speedups.compact_masks(model, score_threshold)``; ``compact_masks(model, None)`` undoes it).
    An earlier prediction in ``out_dir`` is an error, unless ``overwrite`` (its files are removed:
    a mix of two runs' files would not match ``results.json``)."""
    from pycocotools import mask as mask_util

    import speedups

    images, skipped = list_images(paths)
    earlier = check_earlier_predictions(out_dir, overwrite)
    for path, why in skipped:
        print(f"{path}: skipped ({why})")
    for path in earlier:
        os.remove(path)
    os.makedirs(out_dir, exist_ok=True)
    model.eval()
    speedups.compact_masks(model, min_score=score_threshold)  # masks as RLE, only above the threshold
    classes = classes or PENNFUDAN_CLASSES
    results, failed, coco_images, coco_results = [], [], [], []
    for path, stem in zip(images, output_names(images)):
        try:
            photo = read_photo(path)
        except TutorialError as e:
            print(f"error: {e}")
            failed.append(str(e))
            continue
        image = F.to_dtype(photo, torch.float32, scale=True).to(device)
        try:
            pred = to_cpu(model([image])[0])
        except RuntimeError as e:  # e.g. a 3000x1 strip, resized to a width of 0: this image only
            from training_run import is_out_of_memory

            why = "out of memory" if is_out_of_memory(e) else "the model cannot take it"
            message = f"{path}: {photo.shape[-1]}x{photo.shape[-2]} pixels: {why} ({str(e).splitlines()[0][:120]})"
            print(f"error: {message}")
            failed.append(message)
            continue
        finally:
            del image
        keep = pred["scores"] >= score_threshold
        detections = []
        for j in torch.nonzero(keep).flatten().tolist():
            x0, y0, x1, y1 = (round(float(v), 2) for v in pred["boxes"][j])
            label = int(pred["labels"][j])
            category = classes[label - 1] if 1 <= label <= len(classes) else dict(id=label, name=str(label))
            det = dict(box_xyxy=[x0, y0, x1, y1], bbox=[x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)],
                       score=float(pred["scores"][j]), label=label, category_id=category["id"],
                       category_name=category["name"])
            if "masks_rle" in pred:
                rle = pred["masks_rle"][j]
                det["mask_rle"] = dict(size=list(rle["size"]), counts=rle["counts"])
            elif "masks" in pred:  # a model without this project's speed-ups
                binary = (pred["masks"][j, 0] > 0.5).numpy().astype("uint8")
                rle = mask_util.encode(binary.copy(order="F"))
                det["mask_rle"] = dict(size=list(rle["size"]), counts=rle["counts"].decode("ascii"))
            detections.append(det)
        record = dict(image=path, height=photo.shape[-2], width=photo.shape[-1],
                      score_threshold=score_threshold, detections=detections)
        image_id = len(coco_images) + 1
        coco_images.append(dict(id=image_id, file_name=path, height=photo.shape[-2], width=photo.shape[-1]))
        coco_results += [dict(image_id=image_id, category_id=d["category_id"], bbox=d["bbox"], score=d["score"],
                              **({"segmentation": d["mask_rle"]} if "mask_rle" in d else {})) for d in detections]
        json_path, png_path = os.path.join(out_dir, stem + ".json"), os.path.join(out_dir, stem + ".png")
        written = False
        try:  # both files or neither: a Ctrl-C between them must not leave one alone
            save_png(draw_predictions(photo, pred, score_threshold, classes), png_path)
            write_json_atomic(record, json_path)
            written = True
        finally:
            if not written:
                for done in (png_path, json_path):
                    if os.path.exists(done):
                        os.remove(done)
        print(f"{path}: {len(detections)} detection(s) -> {png_path}, {json_path}")
        results.append(record)
    if coco_images:
        write_json_atomic(dict(images=coco_images, annotations=[],
                               categories=[dict(id=c["id"], name=c["name"]) for c in classes]),
                          os.path.join(out_dir, "images.json"))
        write_json_atomic(coco_results, os.path.join(out_dir, "results.json"))
        print(f"COCO results of all images: {os.path.join(out_dir, 'results.json')} "
              f"(with {os.path.join(out_dir, 'images.json')})")
    return dict(predictions=results, skipped=skipped, failed=failed)


class NoInterrupt:
    """Ctrl-C ignored for a few renames that must happen together (main thread only): a press there
    is dropped, the files are then whole and consistent, and the run ends right after."""

    def __enter__(self):
        import signal
        import threading

        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        return self

    def __exit__(self, *exc):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def epoch_record(epoch, lr, train_time, epoch_time, metric_logger, iteration_losses, coco_evaluator, classes=None):
    """One epoch's line of metrics.json: mean loss terms, lr, times, every iteration's loss, COCO numbers."""
    record = dict(epoch=epoch, lr=lr, train_time_s=round(train_time, 2), epoch_time_s=round(epoch_time, 2),
                  train={k: m.global_avg for k, m in metric_logger.meters.items() if k != "lr"},
                  iteration_losses=[r["loss"] for r in iteration_losses])
    if coco_evaluator is not None:  # None: no test set (--test-size 0)
        record.update(evaluation_summary(coco_evaluator, classes or PENNFUDAN_CLASSES))
    return record


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


def save_epoch_outputs(output_dir, records):
    """metrics.json and curves.png, rewritten after every epoch."""
    write_json_atomic(records, os.path.join(output_dir, "metrics.json"))
    plot_curves(records, os.path.join(output_dir, "curves.png"))
