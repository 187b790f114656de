"""The failure report's gallery (``finetune.outputs.report``): the test images, worst first, as
JPEGs with the ground truth beside the predictions (missed, correct and wrong-class boxes in
their own colours).
"""

import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from finetune.data.image_files import read_rgb
from finetune.outputs.analysis import match_image
from utils import unwrap_subset

GALLERY_SIZE = 50  # images shown, worst first (the tutorial's and the demo's whole test set)


GALLERY_LONG_SIDE = 384  # a 128-px image upscaled 3x: class names and boxes readable


GALLERY_MAX_SIDE = 640  # a phone photo scaled down: two panels fit the page, and its JPEG is ~100 KB, not 18 MB


COLOURS = dict(truth=(0, 160, 60), missed=(255, 140, 0), correct=(30, 90, 230), wrong=(220, 20, 60))


def is_pennfudan_folder(dataset):
    """Whether ``dataset`` is tv_training's ``PennFudanDataset`` (a folder ``root`` with the file
    names ``imgs`` and ``masks``), whose item i is the file ``imgs[i]``."""
    return not hasattr(dataset, "entries") and isinstance(getattr(dataset, "root", None), str) \
        and isinstance(getattr(dataset, "imgs", None), list) and isinstance(getattr(dataset, "masks", None), list)


def image_index(dataset):
    """``{image_id: index}`` for ``dataset`` (a Subset or not), without decoding images where
    the dataset says its ids: a ``CocoFormatDataset`` (``entries``) or a Penn-Fudan folder
    dataset (its image id is its index); otherwise by reading every target."""
    base, indices = unwrap_subset(dataset)
    if hasattr(base, "entries"):
        return {base.entries[j]["image_id"]: i for i, j in enumerate(indices)}
    if is_pennfudan_folder(base):
        return {int(j): i for i, j in enumerate(indices)}
    return {int(dataset[i][1]["image_id"]): i for i in range(len(dataset))}


def picture(dataset, i):
    """Image ``i`` of ``dataset`` as (3, H, W), without its masks where the dataset allows (half
    the gallery's time otherwise): the test transform only converts, it does not move pixels."""

    base, indices = unwrap_subset(dataset)
    if hasattr(base, "entries") and hasattr(base, "with_masks"):  # CocoFormatDataset
        return type(base)([base.entries[indices[i]]], base.classes, None, False)[0][0]
    if is_pennfudan_folder(base):
        return read_rgb(os.path.join(base.root, "PNGImages", base.imgs[indices[i]]))
    return dataset[i][0]


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def draw_panel(image_hwc, boxes, texts, colours, scale, title):
    """The image upscaled by ``scale`` with labelled boxes and a title bar above."""

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

    pairs, missed, false, ignored = match_image(image, iou_threshold, score_threshold)
    side = max(image_hwc.shape[:2])
    scale = long_side / side if side < long_side else max_side / side if side > max_side else 1.0

    def name(c):
        return names[c - 1] if 1 <= c <= len(names) else str(c)

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
