"""Dataset files: the Penn-Fudan layout read, checked and downloaded; train/test split and loaders.

Penn-Fudan layout: ``PNGImages/X.png`` with ``PedMasks/X_mask.png``, where pixel value k marks
the k-th pedestrian (0 is background). ``PennFudanDataset`` (tv_training.py) reads one pair
with ``read_rgb``/``read_instance_mask``/``instance_masks_and_boxes``; ``check_dataset`` decodes
every pair once before training, so a broken file is named before any time is spent.
"""

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
import zipfile

import numpy as np
import torch
from PIL import Image
from torchvision.ops.boxes import masks_to_boxes
from torchvision.transforms.v2 import functional as F

import utils
from errors import DatasetError

DATA_URL = "https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip"


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


# torchvision 0.29 deprecates its image decoders (read_image) in favour of TorchCodec; PIL
# decodes the same PNGs, converts any image mode to RGB, and keeps palette masks as indices.
def _open_png(path, what):
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except (OSError, SyntaxError, ValueError) as e:  # truncated, not an image, bad header
        raise DatasetError(f"{path}: cannot decode {what} ({str(e).splitlines()[0][:120]}). "
                           f"Replace it with a valid PNG or remove it and its {'mask' if what == 'image' else 'image'}.") from None


def to_rgb(im):
    """A PIL image in RGB. 16-bit (and 32-bit integer) grayscale is scaled to 8 bits over its
    full range first: PIL's own conversion clips every value above 255, giving a white image."""
    if im.mode.startswith("I"):  # I;16, I;16B, I (what PIL makes of 16-bit grayscale PNGs and TIFFs)
        pixels = np.clip(np.asarray(im), 0, 65535).astype(np.uint32) >> 8
        im = Image.fromarray(pixels.astype(np.uint8), "L")
    elif im.mode == "F":
        raise ValueError("32-bit floating-point pixels, which have no fixed range; save it with 8 or 16 bits")
    return im.convert("RGB")


def read_rgb(path):
    """Decode an image as a (3, H, W) uint8 tensor (RGBA, grayscale, 16-bit and palette PNGs are converted)."""
    im = _open_png(path, "image")
    try:
        return F.pil_to_tensor(to_rgb(im))
    except ValueError as e:
        raise DatasetError(f"{path}: cannot use this image ({e}).") from None


def read_instance_mask(path, image_size=None):
    """Decode an instance mask (grayscale or palette: values are instance ids) as an (H, W) tensor."""
    im = _open_png(path, "mask")
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
    from torchvision.datasets.utils import download_url

    parent = os.path.dirname(os.path.abspath(root)) or "."
    os.makedirs(parent, exist_ok=True)
    zip_path = os.path.join(parent, "PennFudanPed.zip")
    if not os.path.exists(zip_path):
        try:
            download_url(DATA_URL, parent, filename="PennFudanPed.zip")
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


def _holds_other_files(folder):
    """Whether ``folder`` holds anything but hidden entries and empty folders (such as the run's
    --output-dir, which the checks create before the data step)."""
    if not os.path.isdir(folder):
        return False
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if not name.startswith(".") and not (os.path.isdir(path) and not os.listdir(path)):
            return True
    return False


def prepare_data(root, make_synthetic=None):
    """Make sure ``root`` holds a dataset: ``make_synthetic(root)`` writes one (the demo), or a
    folder named ``PennFudanPed`` is downloaded; any other missing path is left for the checks
    to report (probably a typo).

    Under torchrun only rank 0 looks and writes; every rank then meets at the barrier (a
    rank deciding on its own could see rank 0's half-written folder and skip the wait).
    """
    from labelme_yolo import is_labelme_folder, is_yolo_file

    if is_yolo_file(root):  # a YOLO data.yaml: your own data, nothing to make
        if not os.path.isfile(root):
            raise DatasetError(f"{root}: no such YOLO data file. Pass the data.yaml of your dataset.")
        return
    if is_labelme_folder(root):  # labelme JSONs: your own data, never a place for the demo's or a download
        return
    if str(root).lower().endswith(".json"):  # a COCO file: your own data, nothing to make
        if not os.path.isfile(root):
            raise DatasetError(f"{root}: no such COCO file. Pass the instances JSON your annotation tool exported.")
        return
    if os.path.isfile(os.path.normpath(root)):  # normpath: "photo.png/" names the file too
        raise DatasetError(f"{root}: a file, not a dataset. Pass a Penn-Fudan folder (PNGImages/, PedMasks/) or "
                           f"your own data: a COCO instances file (.json), a labelme folder or a YOLO data.yaml.")
    if utils.is_main_process() and not os.path.isdir(os.path.join(root, "PNGImages")):
        if make_synthetic is not None:
            if _holds_other_files(root):  # only into a new or empty folder: never among the user's own files
                raise DatasetError(f"{root}: a folder with other files and no PNGImages/, so --demo will not "
                                   f"write its synthetic images there. For your own data pass its COCO file "
                                   f"(--data-path FILE.json), labelme folder or YOLO data.yaml; for the demo, a "
                                   f"new or empty --data-path.")
            make_synthetic(root)
        elif os.path.basename(os.path.normpath(root)) == "PennFudanPed":
            download_pennfudan(root)
    if utils.get_world_size() > 1:
        torch.distributed.barrier()  # the other ranks wait until rank 0 has written the data


def split_indices(n, test_size, train_size, seed):
    """Seeded random split (the tutorial's unseeded randperm makes runs unrepeatable)."""
    if test_size >= n:
        raise DatasetError(f"--test-size {test_size} leaves no training image out of {n}; use a smaller value.")
    indices = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    train, test = indices[:-test_size] if test_size > 0 else indices, indices[-test_size:] if test_size > 0 else []
    if train_size is not None:
        train = train[:train_size]
    return train, test


def ignore_ctrl_c(worker_id):
    """DataLoader workers leave Ctrl-C to the main process: a terminal sends SIGINT to the whole
    process group, and a worker that died of it would fail the batch the main process still
    needs while it finishes the current iteration (training_run.StopAtSafePoint)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loaders(dataset, dataset_test, batch_size, workers, distributed, seed, aspect_ratio_group_factor=-1,
                 pin_memory=False):
    """Train/test DataLoaders; returns (train_loader, test_loader, train_sampler, shuffle_generator)."""
    shuffle_gen = torch.Generator().manual_seed(seed)
    if distributed:
        train_sampler = torch.utils.data.distributed.DistributedSampler(dataset, seed=seed)
        test_sampler = torch.utils.data.distributed.DistributedSampler(dataset_test, shuffle=False)
    else:
        train_sampler = torch.utils.data.RandomSampler(dataset, generator=shuffle_gen)
        test_sampler = torch.utils.data.SequentialSampler(dataset_test)
    if aspect_ratio_group_factor >= 0:
        from group_by_aspect_ratio import GroupedBatchSampler, create_aspect_ratio_groups

        group_ids = create_aspect_ratio_groups(dataset, k=aspect_ratio_group_factor)
        batch_sampler = GroupedBatchSampler(train_sampler, group_ids, batch_size)
    else:
        batch_sampler = torch.utils.data.BatchSampler(train_sampler, batch_size, drop_last=True)
    common = dict(num_workers=workers, collate_fn=utils.collate_fn, pin_memory=pin_memory,
                  persistent_workers=workers > 0, worker_init_fn=ignore_ctrl_c if workers > 0 else None)
    train_loader = torch.utils.data.DataLoader(dataset, batch_sampler=batch_sampler, **common)
    test_loader = torch.utils.data.DataLoader(dataset_test, batch_size=1, sampler=test_sampler, **common)
    return train_loader, test_loader, train_sampler, shuffle_gen


# ---------------------------------------------------------------------------------------
# COCO instances files (your own data: CVAT, labelme2coco, Roboflow exports)
# ---------------------------------------------------------------------------------------

REQUIRED_FIELDS = {"images": ("id", "file_name", "width", "height"),
                   "annotations": ("id", "image_id", "category_id", "bbox"),
                   "categories": ("id", "name")}


def read_coco_file(path):
    """A COCO instances file, checked: JSON, the three lists, their required fields, unique ids,
    annotations that point at existing images and categories. Errors name the file and the fix."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read it ({e.strerror or e}).") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text; a COCO file is JSON. Export it again.") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno} ({e.msg}). "
                           f"Fix the file or export it again.") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: the top level is a {type(data).__name__}, not a COCO instances file (an object "
                           f"with images, annotations and categories). Per-image JSON (labelme) must be converted, "
                           f"e.g. with labelme2coco.")
    for key, fields in REQUIRED_FIELDS.items():
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{path}: no \"{key}\" list; a COCO instances file has images, annotations and "
                               f"categories.")
        seen = set()
        for i, item in enumerate(data[key]):
            missing = [f for f in fields if not isinstance(item, dict) or f not in item]
            if missing:
                raise DatasetError(f"{path}: {key}[{i}] has no \"{missing[0]}\" (every {key[:-1]} needs "
                                   f"{', '.join(fields)}).")
            if not _is_id(item["id"]):
                raise DatasetError(f"{path}: {key[:-1]} {item['id']!r}: \"id\" is {item['id']!r}; expected an integer "
                                   f"(or a string). Fix it or export the file again.")
            if item["id"] in seen:
                raise DatasetError(f"{path}: {key[:-1]} id {item['id']} appears twice (pycocotools would silently "
                                   f"keep one); give every {key[:-1]} its own id.")
            seen.add(item["id"])
    _check_values(data, path)
    image_ids, category_ids = {im["id"] for im in data["images"]}, {c["id"] for c in data["categories"]}
    for ann in data["annotations"]:
        if ann["image_id"] not in image_ids:
            raise DatasetError(f"{path}: annotation {ann['id']} refers to image_id {ann['image_id']}, which is not "
                               f"in \"images\".")
        if ann["category_id"] not in category_ids:
            raise DatasetError(f"{path}: annotation {ann['id']} refers to category_id {ann['category_id']}, which "
                               f"is not in \"categories\".")
    return data


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _whole(value):
    """``value`` as an int when it is a whole number (exporters write 640, 640.0 or "640"), else None."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _is_id(value):
    """A usable id: an integer (also written as 3.0, as numpy-based exporters do) or a string."""
    return isinstance(value, str) or _whole(value) is not None


def _check_values(data, path):
    """The values of the fields read here have the types the COCO format gives them; the first
    that does not is an error naming the item, the field and what it should be."""
    def fail(what, key, value, expected):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise DatasetError(f"{path}: {what}: \"{key}\" is {shown}; expected {expected}. Fix it or export the file "
                           f"again.")

    sizes = {}
    for im in data["images"]:
        what = f"image {im['id']}"
        if not isinstance(im["file_name"], str) or not im["file_name"]:
            fail(what, "file_name", im["file_name"], "the image's file name")
        for key in ("width", "height"):
            if _whole(im[key]) is None or _whole(im[key]) < 1:
                fail(what, key, im[key], "a whole number of pixels >= 1")
        sizes[im["id"]] = [_whole(im["height"]), _whole(im["width"])]
    for ann in data["annotations"]:
        what = f"annotation {ann['id']}"
        for key in ("image_id", "category_id"):
            if not _is_id(ann[key]):
                fail(what, key, ann[key], "an integer (or a string) id")
        box = ann["bbox"]
        if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box):
            fail(what, "bbox", box, "[x, y, width, height], 4 numbers")
        if "iscrowd" in ann and ann["iscrowd"] not in (0, 1):
            fail(what, "iscrowd", ann["iscrowd"], "0 or 1")
        if "area" in ann and not _is_number(ann["area"]):
            fail(what, "area", ann["area"], "a number")
        seg = ann.get("segmentation")
        if seg is None or (isinstance(seg, list) and all(isinstance(p, list) and all(_is_number(v) for v in p)
                                                          for p in seg)):
            continue
        if not isinstance(seg, dict):
            fail(what, "segmentation", seg, "polygons [[x1, y1, x2, y2, ...], ...] or an RLE {\"size\", \"counts\"}")
        if not isinstance(seg.get("counts"), (str, list)):
            fail(what, "segmentation", seg, "an RLE with \"counts\" (a string or a list of run lengths)")
        if seg.get("size") != sizes.get(ann["image_id"], seg.get("size")):
            fail(what, "segmentation", seg, f"an RLE whose \"size\" is its image's [height, width], "
                                            f"{sizes[ann['image_id']]}")


def coco_classes(data, path):
    """The classes to train, from ``categories``: ``[{"id": file id, "name": ...}]``, label k + 1 for
    entry k, so no category id (0 included) becomes the background. A category without
    annotations that is only the supercategory of others (Roboflow adds one) is left out."""
    used = {ann["category_id"] for ann in data["annotations"]}
    parents = {c.get("supercategory") for c in data["categories"] if c["id"] in used}
    classes = []
    categories = data["categories"]
    if all(isinstance(c["id"], int) for c in categories):
        categories = sorted(categories, key=lambda c: c["id"])
    for c in categories:
        if c["id"] not in used and c["name"] in parents:
            print(f"note: {path}: category {c['id']} \"{c['name']}\" has no annotations and is the supercategory "
                  f"of others: left out")
            continue
        if c["id"] not in used:
            print(f"note: {path}: category {c['id']} \"{c['name']}\" has no annotations: kept, its AP will be -1")
        classes.append(dict(id=c["id"], name=str(c["name"])))
    if not classes:
        raise DatasetError(f"{path}: no category to train on.")
    names = [c["name"] for c in classes]
    for c in classes:  # per-class results are keyed by name: one name per class
        if names.count(c["name"]) > 1:
            print(f"note: {path}: category {c['id']} shares the name \"{c['name']}\" with another: called "
                  f"\"{c['name']} (id {c['id']})\" here")
            c["name"] = f"{c['name']} (id {c['id']})"
    if len({c["name"] for c in classes}) < len(classes):  # a renamed one met a category already named so
        raise DatasetError(f"{path}: categories share names even as \"name (id N)\" "
                           f"({[c['name'] for c in classes]}); give each category its own name.")
    return classes


def image_places(file_name, json_path, image_dir=None):
    """Where an image of a COCO file may be: ``image_dir`` only, if given; else ``file_name``
    relative to the JSON's folder, a folder named like the JSON (train.json -> train/),
    images/ beside the JSON, and images/ in its parent (CVAT: annotations/ beside images/)."""
    if image_dir:
        return [os.path.join(image_dir, file_name)]
    here = os.path.dirname(os.path.abspath(json_path))
    stem = os.path.splitext(os.path.basename(json_path))[0]
    return [os.path.join(here, file_name), os.path.join(here, stem, file_name),
            os.path.join(here, "images", file_name), os.path.join(os.path.dirname(here), "images", file_name)]


class KindLines:
    """One summary line per kind of problem: ``word: source: count <what><kind> (<label>first places)``.
    The defaults are the COCO reader's warnings (the first five annotation ids); the labelme and
    YOLO readers name places as file and shape or line."""

    def __init__(self, source, word="warning", what="annotation(s) ", label="ids ", shown=5):
        self.source, self.word, self.what, self.label, self.shown, self.kinds = source, word, what, label, shown, {}

    def add(self, kind, where):
        self.kinds.setdefault(kind, []).append(where)

    def print(self):
        for kind, places in self.kinds.items():
            more = ", ..." if len(places) > self.shown else ""
            print(f"{self.word}: {self.source}: {len(places)} {self.what}{kind} "
                  f"({self.label}{', '.join(map(str, places[:self.shown]))}{more})")


def _clean_annotation(ann, width, height, warnings):
    """``ann`` with its box clipped to the image and usable polygons, or None (no area left)."""
    x, y, w, h = (float(v) for v in ann["bbox"])
    if not all(np.isfinite([x, y, w, h])):
        warnings.add("with a box that is not finite (NaN or infinity), dropped", ann["id"])
        return None
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))
    if w <= 0 or h <= 0 or x1 - x0 <= 0 or y1 - y0 <= 0:
        warnings.add("with a box of zero or negative size inside the image, dropped", ann["id"])
        return None
    if (x0, y0, x1, y1) != (x, y, x + w, y + h):
        warnings.add("with a box reaching outside the image, clipped", ann["id"])
    seg = ann.get("segmentation")
    if isinstance(seg, list):
        parts = [p for p in seg if isinstance(p, list) and len(p) >= 6]
        if len(parts) < len(seg):
            warnings.add("with polygon parts of fewer than 3 points, dropped", ann["id"])
        if not seg:
            warnings.add("with an empty segmentation (its box is used as its mask)", ann["id"])
        seg = parts or None
    return dict(id=ann["id"], category_id=ann["category_id"], box=[x0, y0, x1, y1], segmentation=seg,
                iscrowd=int(ann.get("iscrowd", 0)), area=float(ann.get("area", w * h)))


def annotation_mask(ann, height, width):
    """An (H, W) uint8 mask from polygons, compressed or uncompressed RLE; the box without one."""
    from pycocotools import mask as coco_mask

    seg = ann["segmentation"]
    if seg is None:
        mask = np.zeros((height, width), np.uint8)
        x0, y0, x1, y1 = ann["box"]
        mask[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))] = 1
        return mask
    if isinstance(seg, list):
        rle = coco_mask.merge(coco_mask.frPyObjects(seg, height, width))
    elif isinstance(seg.get("counts"), list):
        rle = coco_mask.frPyObjects(seg, height, width)
    else:
        rle = dict(seg, counts=seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"])
    return coco_mask.decode(rle)


def load_coco_images(path, image_dir=None, data=None):
    """Read and check a COCO file and its images. Returns ``(entries, classes, has_masks)``.

    ``data``: the COCO dict already built from ``path`` (a labelme folder or a YOLO data.yaml,
    labelme_yolo.py), its images with the ``path`` found for each.

    ``entries``: one dict per image (path, image_id, width, height, its cleaned annotations,
    whether its EXIF orientation must be applied), in the file's order. Missing or unreadable
    images and sizes that differ from the JSON are errors; problems of single annotations are
    warnings (one line per kind) and are fixed or dropped.
    """
    data = read_coco_file(path) if data is None else data
    classes = coco_classes(data, path)
    labels = {c["id"]: k + 1 for k, c in enumerate(classes)}
    by_image = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    warnings, entries = KindLines(path), []
    for im in data["images"]:
        places = [im["path"]] if "path" in im else image_places(im["file_name"], path, image_dir)
        found = next((p for p in places if os.path.isfile(p)), None)
        if found is None:
            raise DatasetError(f"{path}: image {im['file_name']} (id {im['id']}) not found; looked in "
                               f"{', '.join(places)}. Pass --image-dir FOLDER where the images are.")
        try:  # decoded once, so a truncated file stops the run here and not epochs into it
            with Image.open(found) as pil:
                size, orientation = pil.size, pil.getexif().get(0x0112, 1)
                pil.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))  # JPEG: 1/8 scale, every byte read
                to_rgb(pil)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise DatasetError(f"{found}: cannot read this image ({str(e).splitlines()[0][:100]}). Replace it or "
                               f"remove it from {path}.") from None
        width, height = _whole(im["width"]), _whole(im["height"])
        rotate = False
        if size != (width, height):
            rotate = size == (height, width) and orientation in (5, 6, 7, 8)
            if not rotate:
                swapped = " (width and height swapped: the image is rotated by its EXIF orientation?)" \
                    if size == (height, width) else ""
                raise DatasetError(f"{found}: {size[0]}x{size[1]} pixels, but {path} says {width}x{height}"
                                   f"{swapped}. Export the annotations again from these images.")
        anns = [a for a in (_clean_annotation(a, width, height, warnings) for a in by_image.get(im["id"], []))
                if a is not None and a["category_id"] in labels]
        for a in anns:
            a["label"] = labels[a["category_id"]]
        entries.append(dict(path=found, image_id=im["id"], width=width, height=height, anns=anns, exif=rotate,
                            file_name=im["file_name"]))
    warnings.print()
    has_masks = any(a.get("segmentation") for a in data["annotations"])
    return entries, classes, has_masks


class CocoFormatDataset(torch.utils.data.Dataset):
    """Images of a COCO instances file, as ``PennFudanDataset`` returns them: ``(image, target)``
    with tv_tensors; ``labels`` 1..K (``classes``), ``image_id`` the file's own id. Crowd regions
    are left out of the targets (COCO evaluation keeps them, ``coco_ground_truth``)."""

    def __init__(self, entries, classes, transforms, with_masks=True):
        self.entries, self.classes, self.transforms, self.with_masks = entries, classes, transforms, with_masks
        self.imgs = [os.path.basename(e["path"]) for e in entries]

    def __getitem__(self, idx):
        from PIL import ImageOps
        from torchvision import tv_tensors

        e = self.entries[idx]
        with Image.open(e["path"]) as pil:
            pil = ImageOps.exif_transpose(pil) if e["exif"] else pil
            img = tv_tensors.Image(F.pil_to_tensor(to_rgb(pil)))
        anns = [a for a in e["anns"] if not a["iscrowd"]]
        boxes = torch.tensor([a["box"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(e["height"], e["width"])),
            "labels": torch.tensor([a["label"] for a in anns], dtype=torch.int64),
            "image_id": e["image_id"],
            "area": (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 2] - boxes[:, 0]),
            "iscrowd": torch.zeros((len(anns),), dtype=torch.int64),
        }
        if self.with_masks:
            masks = np.stack([annotation_mask(a, e["height"], e["width"]) for a in anns]) if anns else \
                np.zeros((0, e["height"], e["width"]), np.uint8)
            target["masks"] = tv_tensors.Mask(torch.from_numpy(masks))
        if self.transforms is not None:
            img, target = self.transforms(img, target)
        return img, target

    def get_height_and_width(self, idx):
        return self.entries[idx]["height"], self.entries[idx]["width"]

    def __len__(self):
        return len(self.entries)


def coco_ground_truth(entries, classes):
    """The COCO ground truth of ``entries``: their own annotations (crowd regions included), with
    category ids relabelled 1..K one to one (AP unchanged) and the file's image ids."""
    from pycocotools.coco import COCO

    images, annotations = [], []
    for e in entries:
        images.append(dict(id=e["image_id"], file_name=e["file_name"], width=e["width"], height=e["height"]))
        for a in e["anns"]:
            x0, y0, x1, y1 = a["box"]
            seg = a["segmentation"] if a["segmentation"] is not None else [[x0, y0, x1, y0, x1, y1, x0, y1]]
            # numbered 1..N: pycocotools reads id 0 as "no match", and labelme/YOLO annotations are
            # named by file and shape (for the warnings), not by a number
            annotations.append(dict(id=len(annotations) + 1, image_id=e["image_id"], category_id=a["label"],
                                    bbox=[x0, y0, x1 - x0, y1 - y0], area=a["area"], iscrowd=a["iscrowd"],
                                    segmentation=seg))
    coco = COCO()
    coco.dataset = dict(images=images, annotations=annotations,
                        categories=[dict(id=k + 1, name=c["name"]) for k, c in enumerate(classes)])
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


PENNFUDAN_CLASSES = [dict(id=1, name="pedestrian")]


def load_datasets(data_path, pennfudan_dataset, get_transform, test_size, train_size, seed,
                  test_data_path=None, image_dir=None, check=True, class_names=None):
    """The train and test datasets of a run, from a Penn-Fudan folder or a COCO file (``.json``).

    Returns a dict: ``train``, ``test`` (Subsets or datasets), ``classes`` (``[{"id", "name"}]``,
    label k + 1 for entry k), ``has_masks``, and ``coco_gt`` (the test set's COCO ground truth,
    or None to build it from the test dataset, as for Penn-Fudan). ``pennfudan_dataset`` is the
    tutorial's class (it lives in tv_training.py); ``check`` decodes every Penn-Fudan pair first.
    """
    from labelme_yolo import is_yolo_file, load_own_format, reads_as_labelme

    own_format = is_yolo_file(data_path) or reads_as_labelme(data_path)
    if class_names and not own_format:
        raise DatasetError(f"--classes: applies to labelme folders only; {data_path} names its classes itself.")
    if not str(data_path).lower().endswith(".json") and not own_format:
        if check:
            summary = check_dataset(data_path)
            print(f"Dataset {data_path}: {summary['images']} images, {summary['instances']} instances, "
                  f"{summary['negative_images']} without pedestrians")
        train = pennfudan_dataset(data_path, get_transform(train=True))
        test = pennfudan_dataset(data_path, get_transform(train=False))
        train_idx, test_idx = split_indices(len(train), test_size, train_size, seed)
        return dict(train=torch.utils.data.Subset(train, train_idx), test=torch.utils.data.Subset(test, test_idx),
                    classes=PENNFUDAN_CLASSES, has_masks=True, coco_gt=None)
    if own_format:  # a labelme folder or a YOLO data.yaml, read into the same entries
        (entries, classes, has_masks), test = load_own_format(data_path, test_data_path, class_names, image_dir)
    else:
        entries, classes, has_masks = load_coco_images(data_path, image_dir)
        test = load_coco_images(test_data_path, image_dir) if test_data_path else None
    if test is not None:
        test_entries, test_classes, test_masks = test
        if [(c["id"], c["name"]) for c in test_classes] != [(c["id"], c["name"]) for c in classes]:
            raise DatasetError(f"{test_data_path}: its categories differ from {data_path}'s "
                               f"({[c['name'] for c in test_classes]} vs {[c['name'] for c in classes]}); "
                               f"train and test files must have the same categories.")
        train_entries = entries[:train_size] if train_size else entries
    else:
        train_idx, test_idx = split_indices(len(entries), test_size, train_size, seed)
        train_entries, test_entries = [entries[i] for i in train_idx], [entries[i] for i in test_idx]
    # images whose only objects are crowd regions teach nothing: left out of training
    train_entries = [e for e in train_entries if not e["anns"] or any(not a["iscrowd"] for a in e["anns"])]
    n_ann = sum(len(e["anns"]) for e in entries)
    print(f"Dataset {data_path}: {len(entries)} images, {n_ann} annotations, {len(classes)} classes: "
          f"{', '.join(c['name'] for c in classes)}")
    return dict(train=CocoFormatDataset(train_entries, classes, get_transform(train=True), has_masks),
                test=CocoFormatDataset(test_entries, classes, get_transform(train=False), has_masks),
                classes=classes, has_masks=has_masks,
                coco_gt=coco_ground_truth(test_entries, classes) if test_entries else None)
