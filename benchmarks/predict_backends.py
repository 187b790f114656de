"""--predict through eager PyTorch (float32, and --eval-bf16 where the CPU has bf16) and the
exported model through ONNX Runtime, on the same images, each backend in a fresh process: s/img
(model load excluded), the first call, peak RSS, and whether the detections agree with float32
(onnx_export's tolerances).

    .venv/bin/python benchmarks/predict_backends.py --weights CKPT --onnx MODEL.onnx --images DIR

The PyTorch rows run this project's ``--predict`` (outputs.predict). The ONNX Runtime row runs as
a deployment would, like the README's snippet: numpy, Pillow and onnxruntime only, no torch and
no module of this project, so its peak RSS is ONNX Runtime's own (the table says whether torch
was loaded). Times are of the model call only: PyTorch's includes pasting the masks and their RLE
above the threshold (this project's model does both inside), ONNX Runtime's is ``session.run``
(whose stock graph pastes every detection's mask); reading the images and writing files are left
out of both.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def cpu_name():
    from finetune.hardware import read_cpuinfo

    try:
        return read_cpuinfo()[0] or "?"
    except OSError:
        return "?"


def report(backend, times):
    """The child's one JSON line from ``times``, ``[(wall s, CPU s)]`` per model call: the first
    call apart (it warms up allocators and kernels). CPU s counts all the process's threads; on
    a machine shared with other work it moves less than wall time does."""
    steady = times[1:] or times
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps(dict(backend=backend, s_per_img=sum(t[0] for t in steady) / len(steady),
                          cpu_s_per_img=sum(t[1] for t in steady) / len(steady), first_s=times[0][0],
                          peak_rss_mb=rss, images=len(times), torch_loaded="torch" in sys.modules)))


def uncompressed_rle(mask):
    """COCO's uncompressed RLE of a boolean (H, W) numpy mask, in numpy alone: run lengths over
    the pixels column by column, the first run being of 0s (of length 0 if the mask starts set)."""
    import numpy as np

    flat = mask.reshape(-1, order="F")
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], edges, [flat.size]))).tolist()
    return dict(size=[int(mask.shape[0]), int(mask.shape[1])], counts=([0] if flat[0] else []) + runs)


def child_onnx(path, images, out_dir, score_threshold):
    """ONNX Runtime as a deployment runs it (numpy, Pillow, onnxruntime; no torch): times each
    ``session.run`` and writes ``detections.json``, the detections scoring at least the threshold
    (boxes rounded to 0.01 px and masks > 0.5, as --predict writes them)."""
    import numpy as np
    import onnxruntime as ort
    from PIL import Image, ImageOps

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    input_name, names = session.get_inputs()[0].name, [o.name for o in session.get_outputs()]
    times, found = [], []
    for file in images:
        with Image.open(file) as im:
            photo = ImageOps.exif_transpose(im).convert("RGB")
        image = np.ascontiguousarray(np.asarray(photo, dtype=np.float32).transpose(2, 0, 1) / 255.0)
        start, cpu = time.perf_counter(), time.process_time()
        values = dict(zip(names, session.run(None, {input_name: image})))
        times.append((time.perf_counter() - start, time.process_time() - cpu))
        keep = values["scores"] >= score_threshold
        record = dict(image=file, boxes=np.round(values["boxes"][keep], 2).tolist(),
                      labels=values["labels"][keep].tolist(), scores=values["scores"][keep].tolist())
        if "masks" in values:
            record["masks"] = [uncompressed_rle(m[0] > 0.5) for m in values["masks"][keep]]
        found.append(record)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "detections.json"), "w") as f:
        json.dump(found, f)
    report("onnx", times)


def child(backend, weights, images, out_dir, score_threshold):
    """One PyTorch backend in this process: this project's --predict, timing each model call."""
    import torch

    import tv_training
    from finetune.models import pretrained
    from finetune.outputs import prediction

    ckpt = pretrained.load_weights_file(weights)
    # the checkpoint names its model; "maskrcnn" and the default sizes only describe a plain state dict
    model, spec = tv_training.build_model("maskrcnn", weights, None, torch.device("cpu"), ckpt)
    classes = spec["classes"]
    times, real_call = [], type(model).__call__

    class Timed(type(model)):  # the model call only: decoding and writing files are the same for all
        def __call__(self, *a, **k):
            start, cpu = time.perf_counter(), time.process_time()
            result = real_call(self, *a, **k)
            times.append((time.perf_counter() - start, time.process_time() - cpu))
            return result

    model.__class__ = Timed
    from finetune.speedups import inference

    with inference.bfloat16_backbone(model, backend == "bf16"):
        prediction.predict(model, images, torch.device("cpu"), out_dir, score_threshold, classes, overwrite=True)
    report(backend, times)


def load_detections(folder, onnx_path):
    """``{image file: prediction}`` of one backend's run, as onnx_export.compare_predictions takes
    it: the ONNX child's detections.json (labels turned into the dataset's category ids through
    the model's sidecar, as --predict writes them), or --predict's results.json with images.json."""
    import torch
    from pycocotools import mask as mask_util

    from finetune.outputs import onnx_runtime

    def prediction(boxes, scores, labels, masks):
        found = dict(boxes=torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4),
                     scores=torch.tensor(scores, dtype=torch.float64), labels=torch.tensor(labels, dtype=torch.int64))
        return dict(found, masks_rle=masks) if masks is not None else found

    onnx_file = os.path.join(folder, "detections.json")
    if os.path.exists(onnx_file):
        classes, _ = onnx_runtime.read_classes(onnx_path)
        category = (lambda k: classes[k - 1]["id"] if classes and 1 <= k <= len(classes) else k)  # noqa: E731
        with open(onnx_file) as f:
            found = {}
            for d in json.load(f):
                masks = None
                if "masks" in d:  # pycocotools' compact RLE, with counts as str as --predict writes them
                    masks = [dict(size=r["size"], counts=mask_util.frPyObjects(r, *r["size"])["counts"].decode("ascii"))
                             for r in d["masks"]]
                found[d["image"]] = prediction(d["boxes"], d["scores"], [category(k) for k in d["labels"]], masks)
            return found
    with open(os.path.join(folder, "results.json")) as f:
        results = json.load(f)
    with open(os.path.join(folder, "images.json")) as f:
        files = {im["id"]: im["file_name"] for im in json.load(f)["images"]}
    found = {}
    for image_id, name in files.items():
        ds = [d for d in results if d["image_id"] == image_id]
        found[name] = prediction([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in ds)],
                                 [d["score"] for d in ds], [d["category_id"] for d in ds],
                                 [d["segmentation"] for d in ds] if ds and "segmentation" in ds[0] else None)
    return found


def agreement(dir_a, dir_b, score_threshold, onnx_path):
    """(images on which ``dir_b``'s detections agree with ``dir_a``'s, images with detections on either side)."""
    import torch

    from finetune.outputs import onnx_export

    a, b = load_detections(dir_a, onnx_path), load_detections(dir_b, onnx_path)
    none = dict(boxes=torch.zeros(0, 4), scores=torch.zeros(0), labels=torch.zeros(0, dtype=torch.int64))
    names = [n for n in sorted(set(a) | set(b)) if len(a.get(n, none)["scores"]) or len(b.get(n, none)["scores"])]
    ok = sum(onnx_export.compare_predictions(a.get(n, none), b.get(n, none), score_threshold)["ok"] for n in names)
    return ok, len(names)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="checkpoint (.pth) for the eager runs (no default)")
    p.add_argument("--onnx", required=True, help="its --export (.onnx) for ONNX Runtime (no default)")
    p.add_argument("--images", nargs="+", required=True, help="images or folders (no default)")
    p.add_argument("--out", default="bench_predict", help="where each backend's predictions go (default bench_predict)")
    p.add_argument("--score-threshold", type=float, default=0.5, help="default 0.5")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.child:  # the children start in the repository's root: the paths typed keep their meaning
        args.out, args.weights, args.onnx = (os.path.abspath(v) if v else v
                                             for v in (args.out, args.weights, args.onnx))
    if args.child == "onnx":  # before any import of this project's: they load torch
        return child_onnx(args.onnx, args.images, os.path.join(args.out, "onnx"), args.score_threshold)
    if args.child:
        return child(args.child, args.weights, args.images, os.path.join(args.out, args.child), args.score_threshold)
    from finetune.errors import TutorialError
    from finetune.hardware import cpu_has_bf16
    from finetune.outputs.prediction import list_images

    for flag, path in (("--weights", args.weights), ("--onnx", args.onnx)):
        if not os.path.isfile(path):
            sys.exit(f"error: {flag} {path}: no such file. Pass the checkpoint and its --export "
                     f"(python tv_training.py --export MODEL.onnx --weights CKPT).")
    try:  # every backend gets the same files in the same order
        images = [os.path.abspath(f) for f in list_images(args.images)[0]]
    except TutorialError as e:
        sys.exit(f"error: {e}")
    if not images:
        sys.exit(f"error: --images {' '.join(args.images)}: no image there. Pass image files or folders holding them.")
    backends = ["fp32"] + (["bf16"] if cpu_has_bf16() else []) + ["onnx"]
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, bf16 instructions: {'yes' if cpu_has_bf16() else 'no'}"
          + ("" if "bf16" in backends else " (--eval-bf16 skipped)"))
    rows = []
    for backend in backends:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", backend, "--weights", args.weights, "--onnx",
               args.onnx, "--out", args.out, "--score-threshold", str(args.score_threshold), "--images", *images]
        run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if run.returncode:
            why = run.stderr.strip().splitlines()[-1] if run.stderr.strip() else f"exit status {run.returncode}"
            sys.exit(f"error: {backend}: {why}")
        rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
    print(f"{len(images)} images, score threshold {args.score_threshold}; s/img leaves out the first call")
    print(f"{'backend':8s} {'s/img':>8s} {'CPU s/img':>9s} {'first':>8s} {'peak RSS':>10s}  {'torch':5s}  "
          f"agrees with fp32")
    for r in rows:
        agree = "-" if r["backend"] == "fp32" else "%d/%d images with detections" % agreement(
            os.path.join(args.out, "fp32"), os.path.join(args.out, r["backend"]), args.score_threshold, args.onnx)
        print(f"{r['backend']:8s} {r['s_per_img']:8.3f} {r['cpu_s_per_img']:9.3f} {r['first_s']:8.3f} "
              f"{r['peak_rss_mb']:7.0f} MB  {'yes' if r['torch_loaded'] else 'no':5s}  {agree}")
    return rows


if __name__ == "__main__":
    main()
