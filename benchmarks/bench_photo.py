"""(e) of benchmarks/bench.py: one ``--predict`` of a big photo, reference against ours.

``make_photo`` writes a synthetic street photo and a demo-model checkpoint that keeps 100
detections; each run is a fresh process (``bench.py --photo-worker``, ``photo_worker``) whose
time excludes the model's start-up and whose peak RSS the parent reads when it exits
(``run_photo_phase``). The reference is the tutorial-era predict (``reference_predict``: every
mask pasted, thresholded and drawn at full size); ours is ``outputs.predict``.
"""

import contextlib
import json
import os
import subprocess
import sys
import time

from bench_workers import BENCH_SCRIPT, import_project, interleaved

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_photo(size, out_dir, seed=0):
    """(e) a synthetic street photo of ``size`` (width, height) as JPEG, and a demo-model checkpoint
    whose settings keep 100 detections (random weights, no score floor)."""
    sys.path.insert(0, ROOT)
    import numpy as np
    import torch
    from PIL import Image

    import tv_training
    from finetune.data.synthetic import make_synthetic_image
    from finetune.models import small_maskrcnn, specs

    width, height = size
    photo, weights = os.path.join(out_dir, f"photo_{width}x{height}.jpg"), os.path.join(out_dir, "photo_model.pth")
    if not os.path.exists(photo):
        small, _ = make_synthetic_image(np.random.default_rng(seed), max(height // 4, 64), max(width // 4, 48))
        Image.fromarray(small).resize((width, height), Image.BILINEAR).save(photo, quality=92)
    kwargs, anchors = small_maskrcnn.model_settings("maskrcnn_resnet18")
    kwargs.update(min_size=128, max_size=224, box_detections_per_img=100, box_score_thresh=0.0, box_nms_thresh=0.95,
                  rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=1000)
    spec = specs.model_spec("maskrcnn_resnet18", 2, "none", kwargs, anchors)
    torch.manual_seed(seed)
    model = specs.build_model(tv_training.MODELS, spec, None)
    torch.save({"model": model.state_dict(), "model_spec": spec}, weights)
    return photo, weights


def reference_predict(model, path, device, out_dir):
    """The tutorial-era --predict on a stock model: full-image float masks, each thresholded and
    encoded from its full-size copy, the overlay drawn from all of them (score threshold 0)."""
    import torch
    from pycocotools import mask as mask_util
    from torchvision.transforms.v2 import functional as F
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    from finetune.outputs import prediction, writing

    image = F.to_dtype(prediction.read_photo(path), torch.float32, scale=True)
    with torch.inference_mode():
        pred = {k: v.cpu() for k, v in model([image.to(device)])[0].items()}
    detections = []
    for j in range(len(pred["scores"])):
        binary = (pred["masks"][j, 0] > 0.5).numpy().astype("uint8")
        rle = mask_util.encode(binary.copy(order="F"))
        detections.append(dict(box_xyxy=pred["boxes"][j].tolist(), score=float(pred["scores"][j]),
                               mask_rle=dict(size=list(rle["size"]), counts=rle["counts"].decode("ascii"))))
    writing.write_json_atomic(dict(image=path, detections=detections), os.path.join(out_dir, "reference.json"))
    drawn = (255.0 * (image - image.min()) / (image.max() - image.min() + 1e-8)).to(torch.uint8)
    drawn = draw_bounding_boxes(drawn, pred["boxes"].long(), [f"pedestrian: {s:.3f}" for s in pred["scores"]],
                                colors="red", width=2)
    drawn = draw_segmentation_masks(drawn, (pred["masks"] > 0.7).squeeze(1), alpha=0.5, colors="blue")
    from PIL import Image

    Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(os.path.join(out_dir, "reference.png"))
    return len(detections)


def photo_worker(config, photo, weights, out_dir, device):
    """(e) one fresh process: build the model, predict on ``photo``, print JSON (time, detections)."""
    import_project(config)
    import torch

    import tv_training
    from finetune.models import pretrained, specs
    from finetune.outputs import prediction

    device = torch.device(device)
    checkpoint = pretrained.load_weights_file(weights)
    model = specs.build_model(tv_training.MODELS, specs.checkpoint_spec(checkpoint),
                                      checkpoint["model"])
    model = model.to(device) if config == "reference" else specs.prepare_for_device(model, device)
    model.eval()
    os.makedirs(out_dir, exist_ok=True)
    t = time.perf_counter()
    if config == "reference":
        n = reference_predict(model, photo, device, out_dir)
    else:
        from finetune.speedups import inference

        with contextlib.redirect_stdout(sys.stderr), inference.inference_speedups(model, device):  # as --predict
            n = len(prediction.predict(model, [photo], device, out_dir, 0.0)["predictions"][0]["detections"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    print(json.dumps(dict(seconds=time.perf_counter() - t, detections=n)))


def run_photo_phase(repeats, args, out_dir):
    """(e) reference vs ours --predict of one big photo, fresh processes, interleaved."""
    photo, weights = make_photo(args.photo_size, out_dir, args.seed)
    result = {c: dict(runs=[]) for c in ("reference", "ours")}
    for r, order in interleaved(["reference", "ours"], repeats):
        for c in order:
            env = dict(os.environ)
            if c == "reference":
                env.pop("OMP_WAIT_POLICY", None)
            proc = subprocess.Popen([sys.executable, BENCH_SCRIPT, "--photo-worker", c, photo, weights,
                                     os.path.join(out_dir, f"photo_{c}"), args.device],
                                    stdout=subprocess.PIPE, stderr=open(os.path.join(out_dir, f"photo_{c}.log"), "a"),
                                    cwd=ROOT, env=env, text=True)
            text = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(f"(e) {c} failed; see {out_dir}/photo_{c}.log")
            run = dict(json.loads(text.strip().splitlines()[-1]), peak_rss_mib=usage.ru_maxrss / 1024)
            result[c]["runs"].append(run)
            print(f"  [photo] repeat {r + 1}/{repeats} {c}: {run['seconds']:.2f} s, "
                  f"peak RSS {run['peak_rss_mib']:.0f} MiB, {run['detections']} detections", flush=True)
    result["size"] = list(args.photo_size)
    return result
