"""--predict through eager PyTorch (float32, and --eval-bf16 where the CPU has bf16) and through
ONNX Runtime, on the same images, each backend in a fresh process: s/img (model load excluded),
peak RSS, and whether the detections agree (onnx_export's tolerances).

    .venv/bin/python benchmarks/predict_backends.py --weights CKPT --onnx MODEL.onnx --images DIR
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
    from argument_checks import read_cpuinfo

    try:
        return read_cpuinfo()[0] or "?"
    except OSError:
        return "?"


def child(backend, weights, images, out_dir, score_threshold):
    """One backend in this process: times each model call, writes the predictions as JSON."""
    import torch

    import onnx_export
    import outputs
    import tv_training

    if backend == "onnx":
        model = onnx_export.OnnxPredictor(weights, mask_min_score=score_threshold)
        classes = None
    else:
        args = tv_training.get_args_parser().parse_args(["--weights", weights])
        ckpt = tv_training.model_weights.load_weights_file(weights)
        model, spec = tv_training.build_model(args, None, torch.device("cpu"), ckpt)
        classes = spec["classes"]
    times, real_call = [], type(model).__call__

    class Timed(type(model)):  # the model call only: decoding and writing files are the same for all
        def __call__(self, *a, **k):
            start = time.perf_counter()
            result = real_call(self, *a, **k)
            times.append(time.perf_counter() - start)
            return result

    model.__class__ = Timed
    import speedups

    with speedups.bfloat16_backbone(model, backend == "bf16"):
        outputs.predict(model, images, torch.device("cpu"), out_dir, score_threshold, classes, overwrite=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    steady = times[1:] or times  # the first call warms up allocators and kernels
    print(json.dumps(dict(backend=backend, s_per_img=sum(steady) / len(steady), first_s=times[0],
                          peak_rss_mb=rss, images=len(times))))


def agreement(dir_a, dir_b, score_threshold):
    import torch

    import onnx_export

    def load(d):
        with open(os.path.join(d, "results.json")) as f:
            return json.load(f)

    a, b = load(dir_a), load(dir_b)
    ok = 0
    ids = sorted({d["image_id"] for d in a + b})
    for i in ids:
        t = [dict(boxes=torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in ds)]).reshape(-1, 4),
                  scores=torch.tensor([d["score"] for d in ds]), labels=torch.tensor([d["category_id"] for d in ds]),
                  **({"masks_rle": [d["segmentation"] for d in ds]} if ds and "segmentation" in ds[0] else {}))
             for ds in ([d for d in a if d["image_id"] == i], [d for d in b if d["image_id"] == i])]
        ok += onnx_export.compare_predictions(t[0], t[1], score_threshold)["ok"]
    return ok, len(ids)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="checkpoint (.pth) for the eager runs (no default)")
    p.add_argument("--onnx", required=True, help="its --export (.onnx) for ONNX Runtime (no default)")
    p.add_argument("--images", nargs="+", required=True, help="images or folders (no default)")
    p.add_argument("--out", default="bench_predict", help="where each backend's predictions go (default bench_predict)")
    p.add_argument("--score-threshold", type=float, default=0.5, help="default 0.5")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args.child, args.onnx if args.child == "onnx" else args.weights, args.images,
                     os.path.join(args.out, args.child), args.score_threshold)
    from argument_checks import cpu_has_bf16

    backends = ["fp32"] + (["bf16"] if cpu_has_bf16() else []) + ["onnx"]
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, bf16 instructions: {'yes' if cpu_has_bf16() else 'no'}"
          + ("" if "bf16" in backends else " (--eval-bf16 skipped)"))
    rows = []
    for backend in backends:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", backend, "--weights", args.weights, "--onnx",
               args.onnx, "--out", args.out, "--score-threshold", str(args.score_threshold), "--images", *args.images]
        run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if run.returncode:
            sys.exit(f"error: {backend}: {run.stderr.strip().splitlines()[-1] if run.stderr.strip() else run.returncode}")
        rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
    print(f"{'backend':10s} {'s/img':>8s} {'first':>8s} {'peak RSS':>10s}  agrees with fp32")
    for r in rows:
        agree = "-" if r["backend"] == "fp32" else "%d/%d images with detections" % agreement(
            os.path.join(args.out, "fp32", ""), os.path.join(args.out, r["backend"]), args.score_threshold)
        print(f"{r['backend']:10s} {r['s_per_img']:8.3f} {r['first_s']:8.3f} {r['peak_rss_mb']:8.0f} MB  {agree}")
    return rows


if __name__ == "__main__":
    main()
