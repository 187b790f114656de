"""Count the ops a Mask R-CNN training step and an evaluation dispatch, and those that make a GPU
wait (host syncs), for stock torchvision, this project's model and its sync-free paths, side by
side. Runs on the CPU (the ops are the ones a GPU runs; finetune/speedups/op_count.py says how a
sync is told apart):

    python benchmarks/count_ops.py                  # the tutorial's model, batch 2 at 256 px (~1 min on 2 cores)
    python benchmarks/count_ops.py --size 800       # the tutorial's image size
    python benchmarks/count_ops.py --json out.json  # the counts, per op name, as JSON too

The model is the tutorial's ``maskrcnn_resnet50_fpn`` with random values (``weights=None,
weights_backbone=None``), two synthetic images with two people each. A training step is one
forward and backward; it is counted on a model's second step (the poolers read their scales from
the first). Evaluation is per image, one image per call, under ``no_grad``.
"""

import argparse
import copy
import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [p for p in (ROOT,) if p not in sys.path]

import tv_training  # noqa: E402
from finetune.speedups import fast_layers, op_count  # noqa: E402

CONFIGS = ("stock", "ours", "ours_sync_free")

def models(size):
    torch.manual_seed(0)
    stock = tv_training.MODELS["maskrcnn"](2, weights=None, weights_backbone=None, min_size=size, max_size=size)
    return dict(stock=stock, ours=fast_layers.speed_up_model(copy.deepcopy(stock), sync_free=False),
                ours_sync_free=fast_layers.speed_up_model(copy.deepcopy(stock), sync_free=True))


def count(size, eval_images):
    """Per configuration: the step's and the evaluation's counters."""
    images, targets = op_count.example_batch(size)
    result = {}
    for name, model in models(size).items():
        op_count.count_training_step(model, images, targets)
        step = op_count.count_training_step(model, images, targets)
        evaluation = op_count.count_evaluation(model, (images * eval_images)[:eval_images])
        result[name] = dict(step=step, eval=evaluation)
    return result


def report(result, eval_images, size):
    lines = [f"Mask R-CNN (tutorial), random init, batch 2 at {size} px, CPU ({torch.__version__}): ops per "
             f"training step (forward + backward) and per evaluated image",
             f"{'':34s}" + "".join(f"{c:>16s}" for c in CONFIGS)]
    rows = [("ops dispatched, step", lambda r: r["step"].total),
            ("host syncs, step", lambda r: r["step"].total_syncs),
            ("ops dispatched, eval per image", lambda r: r["eval"].total / eval_images),
            ("host syncs, eval per image", lambda r: r["eval"].total_syncs / eval_images)]
    for label, value in rows:
        lines.append(f"{label:34s}" + "".join(f"{value(result[c]):16.0f}" for c in CONFIGS))
    for phase, per in (("step", 1), ("eval", eval_images)):
        names = sorted({n for c in CONFIGS for n in result[c][phase].syncs})
        for n in names:
            lines.append(f"  {phase} {n:27s}" + "".join(f"{result[c][phase].syncs[n] / per:16.1f}" for c in CONFIGS))
    host = {c: result[c]["step"].host_reads.total() for c in CONFIGS}
    lines.append(f"(host values read, no sync on a GPU, step: {host})")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256, help="image size and the model's min/max size (default 256)")
    p.add_argument("--eval-images", type=int, default=2, help="images evaluated per configuration (default 2)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--json", default=None, help="also write the counts per op name to this file (default: none)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = count(args.size, args.eval_images)
    print(report(result, args.eval_images, args.size))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({c: {ph: dict(total=r.total, ops=dict(r.ops.most_common()), syncs=dict(r.syncs),
                                    host_reads=dict(r.host_reads))
                           for ph, r in phases.items()} for c, phases in result.items()}, f, indent=1)
    return result


if __name__ == "__main__":
    main()
