"""The Penn-Fudan reader: its folder layout read, checked and downloaded.

Layout: ``PNGImages/X.png`` with ``PedMasks/X_mask.png``, where pixel value k marks the k-th
pedestrian (0 is background). ``PennFudanDataset`` (tv_training.py) needs nothing of this file and
can be copied alone; before training, ``check_dataset`` pairs every image with its mask by name
and decodes each once with the readers here (the same pixels the class reads), so a missing,
unpaired or broken file is named before any time is spent.
"""

import contextlib
import os
import shutil
import tempfile
import zipfile

import numpy as np
import torch
from torchvision.datasets import utils as dataset_utils
from torchvision.ops.boxes import masks_to_boxes

from finetune.data.image_files import open_png, read_rgb
from finetune.errors import DatasetError

DATA_URL = "https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip"


PENNFUDAN_CLASSES = [dict(id=1, name="pedestrian")]


def pair_images_and_masks(root):
    """Return sorted ``[(image_path, mask_path)]``, pairing ``X.png`` with ``X_mask.png``.

    The tutorial sorts both folders and zips them, so one missing mask silently gives
    every later image the wrong mask; here the pairing is by name and any mismatch is an error.
    """
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: data folder not found. Run without --data-path to download "
                           f"Penn-Fudan into data/PennFudanPed, or use --demo for synthetic data.")
    img_dir, mask_dir = os.path.join(root, "PNGImages"), os.path.join(root, "PedMasks")
    for folder in (img_dir, mask_dir):
        if not os.path.isdir(folder):
            raise DatasetError(f"{folder}: folder missing. A Penn-Fudan-style dataset has PNGImages/ "
                               f"(X.png) and PedMasks/ (X_mask.png) side by side.")
    images = sorted(f for f in os.listdir(img_dir) if f.lower().endswith(".png"))
    masks = sorted(f for f in os.listdir(mask_dir) if f.lower().endswith(".png"))
    if not images:
        raise DatasetError(f"{img_dir}: no .png images. Put the dataset's images there (X.png).")
    mask_set = set(masks)
    for name in images:
        expected = name[:-4] + "_mask.png"
        if expected not in mask_set:
            raise DatasetError(f"{os.path.join(img_dir, name)}: no mask {os.path.join(mask_dir, expected)}. "
                               f"Add the mask or remove the image.")
    image_stems = {name[:-4] for name in images}
    for name in masks:
        if not name.endswith("_mask.png") or name[: -len("_mask.png")] not in image_stems:
            raise DatasetError(f"{os.path.join(mask_dir, name)}: no image of the same name in {img_dir} "
                               f"(masks are named X_mask.png for image X.png). Rename or remove it.")
    return [(os.path.join(img_dir, n), os.path.join(mask_dir, n[:-4] + "_mask.png")) for n in images]


def read_instance_mask(path, image_size=None):
    """Decode an instance mask (grayscale or palette: values are instance ids) as an (H, W) tensor."""
    im = open_png(path, "mask")
    if im.mode not in ("L", "P", "I", "I;16"):
        raise DatasetError(f"{path}: mask has {len(im.getbands())} channels ({im.mode}); expected one channel "
                           f"(grayscale or palette) whose pixel value k marks the k-th instance.")
    mask = torch.from_numpy(np.asarray(im).astype(np.int64 if im.mode.startswith("I") else np.uint8))
    if image_size is not None and tuple(mask.shape) != tuple(image_size):
        raise DatasetError(f"{path}: mask is {mask.shape[-1]}x{mask.shape[-2]} but its image is "
                           f"{image_size[1]}x{image_size[0]}; masks must have their image's size.")
    return mask


def instance_masks_and_boxes(mask):
    """Split an id mask into (N, H, W) binary masks and (N, 4) boxes; fix degenerate boxes.

    Instance ids are the distinct non-zero values, contiguous or not. ``masks_to_boxes``
    gives a zero-width (or zero-height) box for an instance one pixel wide (or tall), which
    Mask R-CNN rejects ("All bounding boxes should have positive height and width"): such a
    box is widened to 1 px so the instance still trains. Returns also the number widened.
    """
    obj_ids = torch.unique(mask)
    obj_ids = obj_ids[obj_ids != 0]
    masks = (mask == obj_ids[:, None, None]).to(dtype=torch.uint8)
    boxes = masks_to_boxes(masks)
    degenerate = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    boxes[:, 2] = torch.maximum(boxes[:, 2], boxes[:, 0] + 1)
    boxes[:, 3] = torch.maximum(boxes[:, 3], boxes[:, 1] + 1)
    return masks, boxes, int(degenerate.sum())


def check_dataset(root):
    """Decode every image and mask once, before training: fail early with the file to fix.

    Returns a summary dict (images, instances, negatives, widened boxes).
    """
    pairs = pair_images_and_masks(root)
    summary = dict(images=len(pairs), instances=0, negative_images=0, widened_boxes=0)
    for img_path, mask_path in pairs:
        img = read_rgb(img_path)
        mask = read_instance_mask(mask_path, img.shape[-2:])
        _, _, widened = instance_masks_and_boxes(mask)
        n = int((torch.unique(mask) != 0).sum())
        summary["instances"] += n
        summary["negative_images"] += n == 0
        if widened:
            summary["widened_boxes"] += widened
            print(f"warning: {mask_path}: {widened} instance(s) one pixel wide or tall; "
                  f"their boxes are widened to 1 px so training does not crash")
    return summary


@contextlib.contextmanager
def dataset_folder_being_written(root, inner="", existing=("PNGImages", "PedMasks")):
    """Write a dataset into a temporary folder beside ``root``; move it into place only when complete.

    Yields the temporary folder. When the block ends normally, every entry of ``tmp/inner`` is
    renamed into ``root`` (created if missing), ``PNGImages`` (or a COCO file) last: its presence
    is what marks a dataset as complete, so an interrupted run (Ctrl-C, a full disk) never leaves a folder that
    a later run would take for a whole dataset. On any exception the temporary folder is removed
    and ``root`` is left as it was.
    """
    root = os.path.abspath(root)
    for part in existing:
        if os.path.exists(os.path.join(root, part)):
            raise DatasetError(f"{os.path.join(root, part)}: already there, so the dataset would be mixed with "
                               f"another. Remove it, or pick another --data-path.")
    os.makedirs(os.path.dirname(root), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.partial-", dir=os.path.dirname(root))
    try:
        yield tmp
        src = os.path.join(tmp, inner)
        os.makedirs(root, exist_ok=True)
        for name in sorted(os.listdir(src), key=lambda n: n == "PNGImages" or n.endswith(".json")):
            os.rename(os.path.join(src, name), os.path.join(root, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download_pennfudan(root):
    """Download PennFudanPed.zip next to ``root`` (a folder named PennFudanPed) and extract it, with a progress bar.

    The publisher gives no checksum and the archive has changed over time (78 pedestrians
    were added), so one pinned MD5 would reject valid copies. Instead every member's CRC-32
    is verified and the expected layout is checked before anything is extracted. The archive
    is extracted beside ``root`` and moved into place when complete.
    """

    parent = os.path.dirname(os.path.abspath(root)) or "."
    os.makedirs(parent, exist_ok=True)
    zip_path = os.path.join(parent, "PennFudanPed.zip")
    if not os.path.exists(zip_path):
        try:
            dataset_utils.download_url(DATA_URL, parent, filename="PennFudanPed.zip")
        except (OSError, RuntimeError) as e:  # URLError is an OSError
            if os.path.exists(zip_path):
                os.remove(zip_path)
            raise DatasetError(
                f"{root} is missing and {DATA_URL} could not be downloaded ({e}). Download the zip by hand, "
                f"put it at {zip_path} (or unzip it so that {root}/PNGImages exists), and run again; "
                f"`python tv_training.py --demo` runs fully offline on synthetic data."
            ) from None
    try:
        with zipfile.ZipFile(zip_path) as zf:
            bad = zf.testzip()
            names = zf.namelist()
            n_png = sum(n.startswith("PennFudanPed/PNGImages/") and n.endswith(".png") for n in names)
            n_mask = sum(n.startswith("PennFudanPed/PedMasks/") and n.endswith("_mask.png") for n in names)
            if bad is not None or n_png == 0 or n_png != n_mask:
                raise zipfile.BadZipFile(f"member {bad} fails its CRC" if bad else
                                         f"{n_png} images and {n_mask} masks under PennFudanPed/")
            with dataset_folder_being_written(root, inner="PennFudanPed") as tmp:
                zf.extractall(tmp)  # the archive holds PennFudanPed/...
    except zipfile.BadZipFile as e:
        raise DatasetError(f"{zip_path}: corrupt or unexpected archive ({e}). Delete it and run again "
                           f"to download a fresh copy.") from None
    print(f"Penn-Fudan: {n_png} images extracted to {root}")
