"""``--predict``: the images of the files and folders named, each decoded upright in RGB, and for
each an overlay ``<file name>.png`` and its detections as ``<file name>.json``, with
``results.json`` and ``images.json`` (COCO's results format) for all of them.
"""

import contextlib
import json
import os
import re
import warnings

import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2 import functional as F

from finetune.data.image_files import to_rgb
from finetune.data.masks import mask_to_rle
from finetune.data.pennfudan import PENNFUDAN_CLASSES
from finetune.errors import TutorialError
from finetune.hardware import is_out_of_memory
from finetune.outputs.plots import draw_predictions, to_cpu
from finetune.outputs.writing import save_png, write_json_atomic
from finetune.speedups import mask_paste


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
                with warnings.catch_warnings():  # read_photo says it once, in our words
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    with Image.open(path):
                        pass  # the header only: cheap
                images.append(path)
            except Image.DecompressionBombError:
                images.append(path)  # an image, too big to decode: read_photo reports it, the others go on
            except (OSError, SyntaxError, ValueError):
                if os.path.splitext(path)[1].lower() in image_extensions or p == path:
                    images.append(path)  # looks like an image, or named on purpose: report its failure
                else:
                    skipped.append((path, "not an image PIL can read"))
    if not images:
        raise TutorialError(f"no image PIL can read in {' '.join(paths)} ({len(skipped)} other file(s)).")
    return images, skipped


def _pixels(count):
    return f"{count / 1e6:,.0f} megapixels" if count >= 1e7 else f"{count:,} pixels"


def _too_many_pixels(path, error):
    """The line for an image PIL refuses to decode: over twice ``Image.MAX_IMAGE_PIXELS``."""
    found = re.search(r"\((\d+) pixels\)", str(error))  # PIL names the count only in its message
    if not Image.MAX_IMAGE_PIXELS or not found:
        return f"{path}: not decoded ({str(error).splitlines()[0][:160]})"
    return (f"{path}: too many pixels ({_pixels(int(found.group(1)))}; PIL's limit is "
            f"{_pixels(2 * Image.MAX_IMAGE_PIXELS)}, twice PIL.Image.MAX_IMAGE_PIXELS): not decoded, as it could be "
            f"a decompression bomb. Shrink it (e.g. to 8000 pixels on its long side) to predict on it")


def _large_note(path, width, height):
    """The line for an image over PIL's warning size (``Image.MAX_IMAGE_PIXELS``) but under its limit."""
    count = width * height
    return (f"{path}: {_pixels(count)} ({width}x{height}), large (PIL warns above {_pixels(Image.MAX_IMAGE_PIXELS)}): "
            f"it is resized to --max-size for the model, but decoding it takes {3 * count / 2 ** 30:.1f} GiB of "
            f"memory and the model's float copy {12 * count / 2 ** 30:.1f} GiB")


def read_photo(path):
    """An image file as a (3, H, W) uint8 tensor, turned upright as its EXIF orientation says
    (phone photos), in RGB whatever its mode. Raises ``TutorialError`` naming the file. An image
    over PIL's warning size gets one line of ours (printed) in place of PIL's warning; one over
    twice that size is refused, as PIL refuses it."""

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if Image.MAX_IMAGE_PIXELS and im.width * im.height > Image.MAX_IMAGE_PIXELS:
                    print(_large_note(path, im.width, im.height))
                im = ImageOps.exif_transpose(im)
                return F.pil_to_tensor(to_rgb(im))
    except Image.DecompressionBombError as e:
        raise TutorialError(_too_many_pixels(path, e)) from None
    except (OSError, SyntaxError, ValueError) as e:
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


def _prepare_output(paths, out_dir, overwrite):
    """``(images, skipped)`` of ``paths``, the skipped said, and ``out_dir`` made, an earlier prediction removed."""
    images, skipped = list_images(paths)
    earlier = check_earlier_predictions(out_dir, overwrite)
    for path, why in skipped:
        print(f"{path}: skipped ({why})")
    for path in earlier:
        os.remove(path)
    os.makedirs(out_dir, exist_ok=True)
    return images, skipped


def _run_model(model, path, device):
    """``(photo, prediction on the CPU, None)`` for one image file, or ``(None, None, message)`` when it fails."""
    try:
        photo = read_photo(path)
    except TutorialError as e:
        return None, None, str(e)
    image = F.to_dtype(photo, torch.float32, scale=True).to(device)
    try:
        pred = to_cpu(model([image])[0])
    except RuntimeError as e:  # e.g. a 3000x1 strip, resized to a width of 0: this image only
        why = "out of memory" if is_out_of_memory(e) else "the model cannot take it"
        return None, None, f"{path}: {photo.shape[-1]}x{photo.shape[-2]} pixels: {why} ({str(e).splitlines()[0][:120]})"
    finally:
        del image
    return photo, pred, None


def _detections(pred, score_threshold, classes):
    """The detections scoring at least ``score_threshold``, as the image's .json file lists them."""
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
            det["mask_rle"] = mask_to_rle(pred["masks"][j, 0] > 0.5)
        detections.append(det)
    return detections


def _coco_results(image_id, detections):
    """One image's detections in COCO's results format."""
    return [dict(image_id=image_id, category_id=d["category_id"], bbox=d["bbox"], score=d["score"],
                 **({"segmentation": d["mask_rle"]} if "mask_rle" in d else {})) for d in detections]


def _write_image_files(photo, pred, score_threshold, classes, record, png_path, json_path):
    """The overlay ``png_path`` and the detections ``json_path``: both files or neither."""
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


def _write_coco_files(out_dir, coco_images, coco_results, classes):
    """``images.json`` and ``results.json`` of all images, which pycocotools' ``loadRes`` takes together."""
    write_json_atomic(dict(images=coco_images, annotations=[],
                           categories=[dict(id=c["id"], name=c["name"]) for c in classes]),
                      os.path.join(out_dir, "images.json"))
    write_json_atomic(coco_results, os.path.join(out_dir, "results.json"))
    print(f"COCO results of all images: {os.path.join(out_dir, 'results.json')} "
          f"(with {os.path.join(out_dir, 'images.json')})")


def model_min_score(model):
    """The lowest score ``model`` itself keeps (torchvision's ``box_score_thresh``, 0.05 unless set),
    or None for a model that has no such setting (an ONNX Runtime session)."""
    value = getattr(getattr(model, "roi_heads", model), "score_thresh", None)
    return float(value) if isinstance(value, (int, float)) else None


@contextlib.contextmanager
def keeping_scores_from(model, score_threshold):
    """``model`` keeps detections down to ``score_threshold`` while inside, where its own lowest
    score is higher: a ``--score-threshold`` under torchvision's 0.05 would otherwise find nothing
    more than 0.05 does. Its setting is restored on the way out (evaluation keeps torchvision's)."""
    floor = model_min_score(model)
    if floor is None or score_threshold >= floor:
        yield
        return
    heads = getattr(model, "roi_heads", model)
    heads.score_thresh = score_threshold
    try:
        yield
    finally:
        heads.score_thresh = floor


@torch.inference_mode()
def predict(model, paths, device, out_dir, score_threshold, classes=None, overwrite=False):
    """For each image: ``out_dir/<file name>.png`` (overlay) and ``<file name>.json`` (detections:
    box ``xyxy`` and COCO ``bbox`` ``[x, y, w, h]``, score, label, the dataset's ``category_id`` and
    ``category_name``, mask as COCO RLE); and for all of them ``results.json`` (COCO results
    format) with ``images.json`` beside it, which pycocotools' ``loadRes`` takes together.
    Returns ``dict(predictions, skipped, failed)``: one record per image written, ``[(path, why)]``
    for files that are not images, ``[message]`` for images that could not be decoded (the others
    are still predicted). A Mask R-CNN with this project's speed-ups is left giving masks as RLE
    (``mask_paste.compact_masks(model, score_threshold)``; ``compact_masks(model, None)`` undoes it).
    An earlier prediction in ``out_dir`` is an error, unless ``overwrite`` (its files are removed:
    a mix of two runs' files would not match ``results.json``)."""


    images, skipped = _prepare_output(paths, out_dir, overwrite)
    model.eval()
    mask_paste.compact_masks(model, min_score=score_threshold)  # masks as RLE, only above the threshold
    classes = classes or PENNFUDAN_CLASSES
    with keeping_scores_from(model, score_threshold):
        results, failed, coco_images, coco_results = _predict_each(model, images, device, out_dir, score_threshold,
                                                                   classes)
    if coco_images:
        _write_coco_files(out_dir, coco_images, coco_results, classes)
    return dict(predictions=results, skipped=skipped, failed=failed)


def _predict_each(model, images, device, out_dir, score_threshold, classes):
    results, failed, coco_images, coco_results = [], [], [], []
    for path, stem in zip(images, output_names(images)):
        photo, pred, message = _run_model(model, path, device)
        if message is not None:
            print(f"error: {message}")
            failed.append(message)
            continue
        detections = _detections(pred, score_threshold, classes)
        record = dict(image=path, height=photo.shape[-2], width=photo.shape[-1],
                      score_threshold=score_threshold, detections=detections)
        image_id = len(coco_images) + 1
        coco_images.append(dict(id=image_id, file_name=path, height=photo.shape[-2], width=photo.shape[-1]))
        coco_results += _coco_results(image_id, detections)
        json_path, png_path = os.path.join(out_dir, stem + ".json"), os.path.join(out_dir, stem + ".png")
        _write_image_files(photo, pred, score_threshold, classes, record, png_path, json_path)
        print(f"{path}: {len(detections)} detection(s) -> {png_path}, {json_path}")
        results.append(record)
    return results, failed, coco_images, coco_results
