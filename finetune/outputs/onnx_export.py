"""``--export``: a trained model written as an ONNX file, checked against PyTorch first.

    python tv_training.py --export model.onnx --weights output/checkpoint.pth

The export is torchvision's stock graph (``finetune.speedups.fast_layers.as_reference_model``:
the speed-ups are PyTorch-side only; the resize traced through
``finetune.speedups.onnx_tracing.traceable_transform``) traced by torch's TorchScript-based
exporter at a fixed opset, one float RGB image (CHW, 0..1, any height and width) in,
``boxes``/``labels``/``scores`` (and ``masks``) out. The file is written beside ``<name>.json``
(classes, input and output conventions) and only once ONNX Runtime
(``finetune.outputs.onnx_runtime.OnnxPredictor``), run on real images, gives PyTorch's
detections within the tolerances below (docs/export.md).

onnx and onnxruntime are imported inside the functions that need them: the rest of the project
runs without them.
"""

import json
import os
import time
import warnings

import torch
import torchvision
from pycocotools import mask as mask_util

import utils
from finetune.data import formats
from finetune.data.coco import ReadOptions
from finetune.data.formats import DataSplit, load_datasets
from finetune.errors import DatasetError, TutorialError
from finetune.models import pretrained, specs
from finetune.outputs import prediction, writing
from finetune.outputs.analysis import box_iou
from finetune.outputs.onnx_runtime import OUTPUT_MEANING, OnnxPredictor, is_onnx_model, require, sidecar_path
from finetune.speedups import fast_layers, mask_paste
from finetune.speedups.onnx_tracing import traceable_transform

OPSET = 17  # what torchvision documents for its detection models; onnxruntime >= 1.20 runs it


MAX_VERIFY_IMAGES = 8


# Tolerances of ONNX Runtime (float32, CPU) against eager PyTorch (float32, this project's model),
# from measurement (docs/export.md): on tiny random and demo-size models the largest differences
# seen were ~2e-5 in score, box IoU > 0.9999 and mask IoU > 0.99 (a few boundary pixels of a
# small mask flip at 0.5). The bounds leave about 10x room for other CPUs' rounding while still
# failing on a real disagreement (a wrong resize, class order, or pasting: IoU far below 0.9).
SCORE_TOL = 1e-3  # max |score difference| of a matched detection; also the band around the threshold


BOX_IOU_MIN = 0.99  # min IoU of matched boxes


MASK_IOU_MIN = 0.95  # min IoU of matched masks (mask > 0.5); tiny masks flip a larger share of pixels


# Pixels whose ONNX Runtime probability is this close to 0.5 may round to either side; the mask IoU
# leaves them out. Untrained mask heads put whole masks there (logits near 0).
MASK_PROB_BAND = 1e-3


MATCH_IOU = 0.5  # a detection of one side is matched to the same class's best box above this IoU


# Boxes under a pixel wide and masks of a few pixels: float rounding moves their IoU past the bounds
# above (0.01 px on a 0.5-px sliver, one pixel of three), so a pair also agrees within these.
BOX_PX_TOL = 0.05  # or matched boxes within this many pixels at every coordinate


MASK_PX_TOL = 2  # or matched masks differing in at most this many pixels


def check_export_path(path, overwrite):
    """``path`` (a .onnx file) and its sidecar can be written, and replace nothing without
    ``overwrite``. Creates the folder. Raises ``TutorialError`` naming the fix."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise TutorialError(f"--export {path}: a folder; pass a file name, e.g. {os.path.join(path, 'model.onnx')}.")
    if os.path.isdir(sidecar_path(path)):
        raise TutorialError(f"--export {path}: {sidecar_path(path)}, where its classes go, is a folder; pick "
                            f"another file name.")
    existing = [p for p in (path, sidecar_path(path)) if os.path.exists(p)]
    if existing and not overwrite:
        raise TutorialError(f"--export {path}: {' and '.join(existing)} already exist(s). Keep it with another "
                            f"file name, or replace it with --overwrite.")
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".write-test-{os.getpid()}")
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as e:
        raise TutorialError(f"--export {path}: cannot write in {folder} ({e.strerror or e}). Pick a path you "
                            f"can write to.") from None


def export_onnx(model, path, example_size=(3, 256, 320), opset=OPSET):
    """Trace ``model`` (a torchvision detector, stock classes, eval mode, on the CPU) into an ONNX
    file at ``path`` with a dynamic image height and width, and check it with ``onnx.checker``.
    Returns the output names. ``path`` is written directly: the caller passes a temporary name."""

    onnx = require("onnx", "--export")
    has_masks = getattr(getattr(model, "roi_heads", None), "mask_predictor", None) is not None
    outputs = ["boxes", "labels", "scores"] + (["masks"] if has_masks else [])
    dynamic = {"image": {1: "height", 2: "width"}, **{name: {0: "detections"} for name in outputs}}
    if has_masks:
        dynamic["masks"] = {0: "detections", 2: "height", 3: "width"}
    example = [torch.rand(*example_size, generator=torch.Generator().manual_seed(0))]
    with traceable_transform(model), warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about every Python-side shape computation in torchvision's detection
        # code; torchvision marks those that matter for ONNX, and the verification below checks
        # the traced graph on real images of other sizes.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), path, dynamo=False, opset_version=opset, input_names=["image"],
                          output_names=outputs, dynamic_axes=dynamic)
    onnx.checker.check_model(path)
    return outputs


def add_metadata(path, metadata):
    """Store ``metadata`` (a dict) in the ONNX file's metadata as JSON under "detector", so the
    file alone still names its classes when its .json is lost."""
    onnx = require("onnx", "--export")
    proto = onnx.load(path)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "detector", json.dumps(metadata)
    onnx.save(proto, path)


def describe_model(spec, output_names, opset=OPSET):
    """The sidecar JSON's content: how to feed the model and read its outputs."""

    kwargs = spec.get("kwargs", {})
    return dict(
        format="onnx", opset=opset, model=spec["model"], num_classes=spec["num_classes"],
        classes=[dict(id=c["id"], name=c["name"]) for c in spec["classes"]],
        input=dict(name="image", shape=[3, "height", "width"], dtype="float32", layout="CHW", color="RGB",
                   range=[0.0, 1.0], note=f"one image per run, any size; the model resizes it (shorter side "
                                          f"{kwargs.get('min_size', 800)}, longer at most "
                                          f"{kwargs.get('max_size', 1333)}) and answers in its pixels"),
        outputs=[dict(name=n, meaning=OUTPUT_MEANING[n]) for n in output_names],
        exported_with=dict(torch=torch.__version__, torchvision=torchvision.__version__),
    )


def _mask_iou(rle_a, rle_b, uncertain=None):
    """(IoU, number of pixels in one mask only) of two RLE masks, leaving out the pixels of the RLE
    ``uncertain`` (None: none)."""

    a, b = (dict(r, counts=r["counts"].encode()) for r in (rle_a, rle_b))
    union = mask_util.merge([a, b], intersect=False)
    inter = mask_util.merge([a, b], intersect=True)
    union_px, inter_px = int(mask_util.area(union)), int(mask_util.area(inter))
    if uncertain is not None:
        band = dict(uncertain, counts=uncertain["counts"].encode())
        union_px -= int(mask_util.area(mask_util.merge([union, band], intersect=True)))
        inter_px -= int(mask_util.area(mask_util.merge([inter, band], intersect=True)))
    return (1.0 if union_px == 0 else inter_px / union_px), union_px - inter_px


def compare_predictions(reference, other, score_threshold):
    """Per-image agreement of two predictions (``boxes``, ``labels``, ``scores``, optional
    ``masks_rle``): detections scoring at least ``score_threshold - SCORE_TOL`` are matched, same
    class, best box IoU first. Returns a dict: ``counts`` (each side's detections at or above the
    threshold), ``score_diff`` (max over matched pairs), ``box_iou``/``mask_iou`` (min over matched
    pairs; None without pairs or masks), ``box_px``/``mask_px`` (max coordinate difference in
    pixels, max pixels in one mask only), ``unmatched`` (scores of detections left without a
    partner that score clearly above the threshold: a real difference), ``ok``. A matched pair
    agrees if its box IoU is at least ``BOX_IOU_MIN`` or its coordinates are within
    ``BOX_PX_TOL``, and likewise for masks (``MASK_IOU_MIN``, ``MASK_PX_TOL``), whose IoU leaves out
    the pixels of ``other``'s ``masks_near_threshold`` where it has them (``OnnxPredictor.mask_band``)."""
    low = max(score_threshold - SCORE_TOL, 0.0)
    ref_idx = torch.nonzero(reference["scores"] >= low).flatten().tolist()
    oth_idx = torch.nonzero(other["scores"] >= low).flatten().tolist()
    ious = box_iou(reference["boxes"][ref_idx], other["boxes"][oth_idx]) if ref_idx and oth_idx else None
    free, pairs = set(range(len(oth_idx))), []
    for a, i in enumerate(ref_idx):
        candidates = [b for b in free if int(other["labels"][oth_idx[b]]) == int(reference["labels"][i])
                      and float(ious[a, b]) >= MATCH_IOU]
        if candidates:
            b = max(candidates, key=lambda b: float(ious[a, b]))
            free.discard(b)
            pairs.append((a, b))
    matched_ref = {a for a, _ in pairs}
    left = [float(reference["scores"][i]) for a, i in enumerate(ref_idx) if a not in matched_ref]
    left += [float(other["scores"][oth_idx[b]]) for b in free]
    unmatched = [s for s in left if s >= score_threshold + SCORE_TOL]  # near the threshold: either side may drop it
    score_diff = max((abs(float(reference["scores"][ref_idx[a]]) - float(other["scores"][oth_idx[b]]))
                      for a, b in pairs), default=0.0)
    box = [(float(ious[a, b]), float((reference["boxes"][ref_idx[a]].double()
                                      - other["boxes"][oth_idx[b]].double()).abs().max())) for a, b in pairs]
    mask = []
    if "masks_rle" in reference and "masks_rle" in other:
        uncertain = other.get("masks_near_threshold") or [None] * len(other["masks_rle"])
        mask = [_mask_iou(reference["masks_rle"][ref_idx[a]], other["masks_rle"][oth_idx[b]], uncertain[oth_idx[b]])
                for a, b in pairs]
    counts = (int((reference["scores"] >= score_threshold).sum()), int((other["scores"] >= score_threshold).sum()))
    ok = (not unmatched and score_diff <= SCORE_TOL and all(iou >= BOX_IOU_MIN or px <= BOX_PX_TOL for iou, px in box)
          and all(iou >= MASK_IOU_MIN or px <= MASK_PX_TOL for iou, px in mask))
    return dict(counts=counts, score_diff=score_diff, box_iou=min((iou for iou, _ in box), default=None),
                box_px=max((px for _, px in box), default=None), mask_iou=min((iou for iou, _ in mask), default=None),
                mask_px=max((px for _, px in mask), default=None), unmatched=unmatched, ok=ok)


def _line(name, result, score_threshold):
    fmt = lambda v: "-" if v is None else f"{v:.5f}"  # noqa: E731
    scores = ", ".join(f"{s:.3f}" for s in result["unmatched"])
    extra = f", {len(result['unmatched'])} without a partner (scores {scores})" if result["unmatched"] else ""
    return (f"  {name}: {result['counts'][0]} / {result['counts'][1]} detections >= {score_threshold} "
            f"(PyTorch / ONNX), max |score diff| {result['score_diff']:.1e}, box IoU >= {fmt(result['box_iou'])}, "
            f"mask IoU >= {fmt(result['mask_iou'])}{extra}  {'ok' if result['ok'] else 'DIFFERENT'}")


@torch.inference_mode()
def verify(model, predictor, images, score_threshold):
    """Run ``model`` (eager PyTorch, float32) and ``predictor`` (ONNX Runtime) on ``images``
    (``[(name, float CHW tensor 0..1)]``), print one line per image, and return the per-image
    comparisons (``compare_predictions``) with timings."""

    model.eval()
    low = max(score_threshold - SCORE_TOL, 0.0)
    mask_paste.compact_masks(model, min_score=low)  # masks as RLE, as --predict runs the model
    predictor.mask_min_score, predictor.mask_band = low, MASK_PROB_BAND
    results = []
    for name, image in images:
        try:
            start = time.perf_counter()
            reference = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in model([image])[0].items()}
            eager_s = time.perf_counter() - start
            start = time.perf_counter()
            other = predictor([image])[0]
            onnx_s = time.perf_counter() - start
        except RuntimeError as e:  # e.g. a 300x1 strip, resized to a height of 0
            raise TutorialError(f"{name}: {image.shape[-1]}x{image.shape[-2]} pixels: the model cannot take it "
                                f"({str(e).splitlines()[0][:120]}); check the export on other images (--predict "
                                f"IMAGES).") from None
        result = dict(compare_predictions(reference, other, score_threshold), image=name, eager_s=eager_s,
                      onnx_s=onnx_s)
        print(_line(name, result, score_threshold))
        results.append(result)
    return results


def verification_images(paths, checkpoint, pennfudan_dataset, get_transform, count=MAX_VERIFY_IMAGES):
    """``[(name, float CHW image)]``: the first ``count`` of ``paths`` (``--predict``) or, without
    them, of the test split the checkpoint was trained with (its arguments name the data)."""

    if paths:
        files, _ = prediction.list_images(paths)
        if len(files) > count:
            print(f"Verifying on the first {count} of {len(files)} images")
        images = []
        for f in files:
            if len(images) == count:
                break
            try:
                images.append((f, prediction.read_photo(f).float() / 255.0))
            except TutorialError as e:  # as --predict does: that file only
                print(f"note: {e}; not used for the check")
        if not images:
            raise TutorialError(f"no image in {' '.join(paths)} could be read to check the export on.")
        return images
    trained = checkpoint.get("args") or {}
    hint = "pass images to check the export on with --predict IMAGES."
    if not trained.get("data_path"):
        raise TutorialError(f"the checkpoint does not name the data it was trained on; {hint}")

    data_path = formats.saved_path(trained, "data_path")
    if not os.path.exists(data_path):
        raise TutorialError(f"{data_path}: the checkpoint's data is not here, so there is no test image to check "
                            f"the export on; {hint}")
    try:
        split = DataSplit(trained.get("test_size", 50), trained.get("train_size"), trained.get("seed", 0))
        data = load_datasets(data_path, pennfudan_dataset, get_transform, split,
                             formats.saved_path(trained, "test_data_path"), formats.saved_path(trained, "image_dir"),
                             check=False, ground_truth=False,
                             reading=ReadOptions(trained.get("skip_missing_images", False),
                                                 trained.get("crowd_as_objects", False)))
    except DatasetError as e:
        raise TutorialError(f"{e} (To check the export on other images: --predict IMAGES.)") from None
    test = data["test"]
    if len(test) == 0:
        raise TutorialError(f"{data_path}: the checkpoint's run held out no test image (--test-size 0); {hint}")
    base, where = utils.unwrap_subset(test, range(min(count, len(test))))
    names = [base.imgs[j] if hasattr(base, "imgs") else f"test image {i}" for i, j in enumerate(where)]
    return [(name, test[i][0]) for i, name in enumerate(names)]


def _temporary(path):
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.{os.getpid()}.tmp")


def _export_temporary(model, spec, tmp, num_images):
    """``model`` as torchvision's stock graph exported to ``tmp`` with its metadata; returns the sidecar's dict."""
    start = time.perf_counter()
    fast_layers.as_reference_model(model.eval().cpu()).to(memory_format=torch.contiguous_format)
    names = export_onnx(model, tmp)
    info = describe_model(spec, names)
    # the lowest score the graph keeps is fixed by the trace: --predict says so when asked for less
    info["min_score"] = prediction.model_min_score(model)
    add_metadata(tmp, dict(classes=info["classes"], model=info["model"], min_score=info["min_score"]))
    print(f"Exported {spec['model']} to ONNX (opset {OPSET}) in {time.perf_counter() - start:.1f} s; checking it "
          f"against PyTorch (float32) on {num_images} image(s):")
    return info


def _check_against_pytorch(model, tmp, images, score_threshold):
    """ONNX Runtime on ``tmp`` against eager PyTorch: returns (predictor, results, threshold compared at)."""
    specs.prepare_for_device(model, torch.device("cpu"))  # this project's model, as --predict runs it
    predictor = OnnxPredictor(tmp)
    results = verify(model, predictor, images, score_threshold)
    floor = float(getattr(getattr(model, "roi_heads", None), "score_thresh", 0.05))
    if not any(sum(r["counts"]) for r in results) and score_threshold > floor:
        # nothing scored that high: the check would have compared nothing, so compare what the
        # model outputs at all (the .onnx file gives every detection down to this floor)
        print(f"No detection scores >= {score_threshold} on these images; checking again at the model's lowest "
              f"score, {floor:g}:")
        score_threshold = floor
        results = verify(model, predictor, images, score_threshold)
    if not any(sum(r["counts"]) for r in results):
        print(f"warning: the model detects nothing on these {len(results)} image(s), so the check compared no "
              f"detection; pass images with objects (--predict IMAGES) to compare real detections.")
    return predictor, results, score_threshold


def _raise_if_different(path, results):
    """A ``TutorialError`` when an image's comparison is beyond the tolerances."""
    bad = [r for r in results if not r["ok"]]
    if bad:
        raise TutorialError(
            f"--export {path}: ONNX Runtime disagrees with PyTorch on {len(bad)} of {len(results)} image(s) "
            f"(first: {bad[0]['image']}) beyond the tolerances (|score diff| <= {SCORE_TOL}, box IoU >= "
            f"{BOX_IOU_MIN} or within {BOX_PX_TOL} px, mask IoU >= {MASK_IOU_MIN} or within {MASK_PX_TOL} "
            f"pixels); nothing was written. See docs/export.md.")


def _verified(results, score_threshold):
    """The sidecar's ``verified`` entry: what the check compared, its tolerances and the worst agreement."""
    return dict(images=len(results), score_threshold=score_threshold,
                tolerances=dict(score_diff=SCORE_TOL, box_iou=BOX_IOU_MIN, box_px=BOX_PX_TOL,
                                mask_iou=MASK_IOU_MIN, mask_px=MASK_PX_TOL),
                max_score_diff=max(r["score_diff"] for r in results),
                min_box_iou=min((r["box_iou"] for r in results if r["box_iou"] is not None),
                                default=None),
                min_mask_iou=min((r["mask_iou"] for r in results if r["mask_iou"] is not None),
                                 default=None))


def _put_in_place(info, tmp, tmp_json, path):
    """The sidecar written beside ``tmp``, then both renamed to ``path`` and its sidecar together."""
    writing.write_json_atomic(info, tmp_json)
    with writing.NoInterrupt():  # the pair together: an earlier model.onnx never beside a new model.json
        os.replace(tmp, path)
        os.replace(tmp_json, sidecar_path(path))


def _print_written(path, results):
    """The line saying what was written, with the mean time per image of each side."""
    eager = sum(r["eager_s"] for r in results) / len(results)
    fast = sum(r["onnx_s"] for r in results) / len(results)
    print(f"Wrote {path} and {sidecar_path(path)}: detections agree on {len(results)} image(s); "
          f"{eager:.2f} s/img PyTorch, {fast:.2f} s/img ONNX Runtime (CPU, including the first run)")


def export_and_verify(model, spec, path, images, score_threshold, overwrite=False):
    """Export ``model`` (this project's, from ``build_model``, on the CPU) to ``path`` with its
    sidecar JSON, after ONNX Runtime has matched eager PyTorch on ``images``.

    The graph is torchvision's stock model; the speed-ups are put back afterwards for the eager
    run. Until the check passes the file has a temporary name: an error, a disagreement or a
    Ctrl-C leaves ``path`` as it was (absent, or an earlier export). Returns the sidecar's dict.
    """

    check_export_path(path, overwrite)
    tmp, tmp_json = _temporary(path), _temporary(sidecar_path(path))
    try:
        info = _export_temporary(model, spec, tmp, len(images))
        predictor, results, score_threshold = _check_against_pytorch(model, tmp, images, score_threshold)
        _raise_if_different(path, results)
        info["verified"] = _verified(results, score_threshold)
        del predictor  # the session holds the temporary file open on some systems
        _put_in_place(info, tmp, tmp_json, path)
    except BaseException:
        for left in (tmp, tmp_json):
            if os.path.exists(left):
                os.remove(left)
        raise
    _print_written(path, results)
    return info


def export_command(weights, export_path, make_model, pennfudan_parts, images=None, score_threshold=0.5,
                   overwrite=False, typed_model=None):
    """``--export FILE.onnx --weights CHECKPOINT [--predict IMAGES]``: ``weights`` (a checkpoint)
    exported to ``export_path`` once ONNX Runtime agrees with PyTorch on ``images`` (files or
    folders; None: the checkpoint's test images) at ``score_threshold``.

    ``make_model(classes, device, checkpoint)`` builds the model (tv_training's ``build_model``
    with the model flags: ``options.model_builder``); ``pennfudan_parts``: tv_training's
    ``(PennFudanDataset, get_transform)``, for the checkpoint's test images (passed in: the package
    never imports the script). ``typed_model``: ``--model`` if the user typed it, else None.
    Under torchrun only rank 0 exports; the others return ``{"export": None}`` at once, as two
    processes writing the same temporary file and renaming it would race.
    """
    if not utils.is_main_process():
        return dict(export=None)
    require("onnx", "--export")
    require("onnxruntime", "--export (its check runs the file)")
    if is_onnx_model(weights) or pretrained.is_named_weights(weights):
        raise TutorialError(f"--export needs trained weights to export: --weights CHECKPOINT (e.g. "
                            f"output/checkpoint.pth), not {weights}.")
    checkpoint = pretrained.load_weights_file(weights)
    if "model_spec" in checkpoint:
        specs.check_model_flag(typed_model, checkpoint["model_spec"]["model"], weights)
    check_export_path(export_path, overwrite)  # before the slow part
    checked_on = verification_images(images, checkpoint, *pennfudan_parts)
    model, spec = make_model(None, torch.device("cpu"), checkpoint)
    info = export_and_verify(model, spec, export_path, checked_on, score_threshold, overwrite)
    return dict(export=export_path, sidecar=sidecar_path(export_path), verified=info["verified"])
