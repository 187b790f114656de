"""Side-by-side speed benchmark: the tutorial's reference behaviour against this project's defaults.

    python benchmarks/bench.py                      # CPU (or --device cuda), ~15 min on 2 cores
    python benchmarks/bench.py --quick              # a smoke run at small sizes, a few minutes
    python benchmarks/bench.py --phases compile     # does torch.compile pay? (~6 min)

One run times, on the same synthetic Penn-Fudan-sized data, from the same initial weights
(the pretrained layout of ``get_model_instance_segmentation(2, weights="layout")``: frozen
BatchNorm, 3 trainable ResNet stages, random values -- nothing is downloaded):

(a) one training step at the tutorial's size (min_size 800 / max_size 1333, batch 2), inside a
    real DataLoader loop (the time includes waiting for the batch);
(b) one full evaluation pass over ``--eval-images`` test images;
(c) a whole epoch, train + evaluate, on a small subset (``--epoch-train`` / ``--epoch-test``
    images at ``--epoch-min-size``), as a fresh one-epoch run: loaders and (ours) the COCO
    ground truth are built inside the timed region.

Configurations (each phase runs each configuration in its own worker process, so the peak
RSS is per configuration and phase; ``--reuse-workers``, for smoke runs, keeps one per
configuration for all phases; the parent interleaves the repeats A B B A A B ...):

reference  torchvision's references/detection + the tutorial, reproduced: evaluation under
           ``torch.set_num_threads(1)``, COCO ground truth rebuilt at every evaluation, 4
           non-persistent DataLoader workers, torchvision's mask pasting, NCHW, fp32, and the
           OpenMP runtime's default wait policy.
ours       this project's defaults (tv_training.py / finetune/speedups/): folded frozen BatchNorm, RoI pooling
           as a weighted gather, fast mask pasting, channels_last on AVX-512 CPUs, workers capped at the
           core count and persistent, ground truth built once, evaluation threads untouched.
ours_amp   ours + ``--amp`` (training under bfloat16 autocast on CPU, float16 + GradScaler on
           CUDA; evaluation stays fp32, as in tv_training.py); opt-in (``--configs``).
ours_bf16  ours + bfloat16 autocast on any device, without GradScaler (on CUDA: what the GPU check
           times against float16 + GradScaler); opt-in (``--configs``).
ours_malloc
           ours + glibc malloc told to serve big blocks from its heap and never trim it, so freed
           pages stay resident for later tensors (fewer page faults, more fragmentation); a
           measured candidate, not a project default (``--configs``).
ours_thp   ours + glibc malloc asked to back its memory with transparent huge pages
           (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` in the worker's environment): a page fault per
           2 MiB instead of per 4 KiB where the kernel's THP mode is "madvise"; a measured candidate,
           not a project default (an environment variable glibc reads only at start-up).
ours_nchw, ours_nhwc
           ours with the memory format forced (``--channels-last off`` / ``on``), to see which
           layout is faster on this CPU in one run (``--channels-last auto`` picks by the CPU's
           instruction set).

(d) ``--phases compile`` (not in the default run) answers "does torch.compile pay?": ours against
ours with ``torch.compile`` on the model's backbone (ResNet + FPN, nearly all of a step's FLOPs),
each a fresh process, ``--compile-steps`` training steps at the (c) size on varied images, steps
alternating between the two, compile and recompile time included. It prints both totals, the
steady-state step times and how many steps it takes to win the compile time back, next to the
tutorial's two epochs (120 steps).

(e) ``--phases photo`` (in the default run): one ``--predict`` of a ``--photo-size`` photo
(4000x3000, a phone's 12 megapixels) with the demo's small model set to keep 100 detections and
``--score-threshold 0``, each run a fresh process whose peak RSS is read when it exits. The
reference is torchvision's full-image masks and the tutorial-era predict (every mask pasted at
full size, thresholded and drawn from there); ours is ``outputs.predict`` (masks pasted inside
their boxes and encoded through one image-sized buffer, ``speedups.compact_masks``).

(f) ``--phases demo`` (in the default run): the demo's training step -- its small Mask R-CNN,
AdamW with clipping, batches of 2 demo-sized images -- with torchvision's stock modules
(``as_reference_model``: no speed-ups, AdamW one parameter at a time) against ours (fused AdamW),
the same seeded weights and batches; ``ours_amp`` in ``--configs`` adds the step the demo takes on
a CPU with bf16 instructions. It prints s/step, the ratio, and the convolutions' share of a
profiled step with their FLOP rate next to the fp32 convolution peak measured in the same worker.

Both see identical batches (seeded sampler, no random flip: a flip costs ~1 ms and would make
the two runs' data differ), so losses and COCO numbers can be compared directly.
Results: a table on stdout, everything in ``--out``/bench.json, worker logs in ``--out``/*.log.

This file is the command line (the flags, the data and initial weights, the phases in order,
Ctrl-C); the rest lives beside it:

bench_phases.py   what each phase measures, in a worker process (``Worker``: (a)-(d), (f))
bench_workers.py  the worker processes: start, command, interleave the repeats, stop
bench_photo.py    (e): the photo, the tutorial-era predict, one fresh process per run
bench_report.py   medians, ratios, agreement, the compile verdict, the printed report, machine
                  info, bench.json/bench.txt, an earlier run kept in ``--out``/earlier/
"""

import argparse
import json
import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# the project, and the bench_* modules beside this file: run as a script, this folder is already
# sys.path[0]; imported as benchmarks.bench (the tests), it is not
sys.path[:0] = [p for p in (ROOT, HERE) if p not in sys.path]

from bench_photo import photo_worker, run_photo_phase  # noqa: E402
from bench_report import PHASES, agreement, keep_earlier_run, machine_info, report, write_results  # noqa: E402
from bench_workers import WorkerProcess, close_all, run_compile_phase, run_phase, worker_main  # noqa: E402

CONFIGS = ("reference", "ours", "ours_amp", "ours_bf16", "ours_malloc", "ours_thp", "ours_nchw", "ours_nhwc")


def prepare(args, out_dir):
    """Synthetic data, the seeded split and the initial weights (built once, saved for the workers)."""
    sys.path.insert(0, ROOT)
    import torch

    import tv_training
    from finetune.data.loaders import split_indices
    from finetune.data.pennfudan import pair_images_and_masks
    from finetune.data.synthetic import make_synthetic_pennfudan
    from finetune.models import pretrained

    if not os.path.isdir(os.path.join(args.data_path, "PNGImages")):
        print(f"Generating {args.num_images} synthetic Penn-Fudan-sized images in {args.data_path}", flush=True)
        make_synthetic_pennfudan(args.data_path, num_images=args.num_images, seed=args.seed)
    if "demo" in args.phases and not os.path.isdir(os.path.join(args.demo_data_path, "PNGImages")):
        from finetune.run import demo

        n_demo = 2 * (args.warmup + args.demo_steps + 1) + 2  # batches of 2, each step a new one
        print(f"Generating {n_demo} demo-sized synthetic images in {args.demo_data_path}", flush=True)
        make_synthetic_pennfudan(args.demo_data_path, seed=args.seed, **dict(demo.DEMO_DATA, num_images=n_demo))
    n = len(pair_images_and_masks(args.data_path))
    n_test = max(args.eval_images, args.epoch_test)
    train_idx, test_idx = split_indices(n, n_test, None, args.seed)
    need_train = max(args.epoch_train, (args.warmup + args.steps) * args.batch_size)
    if len(train_idx) < need_train:
        sys.exit(f"{args.data_path} has {n} images; need {need_train} for training + {n_test} for testing "
                 f"(use --num-images with a fresh --data-path)")
    init_path = os.path.join(out_dir, "initial_weights.pth")
    if args.weights:
        state = pretrained.load_weights_file(args.weights)["model"]
    else:
        torch.manual_seed(args.seed)
        state = pretrained.build_detector(tv_training.get_model_instance_segmentation, "maskrcnn", 2,
                                             "layout").state_dict()
    import utils

    utils.atomic_save(state, init_path)
    return train_idx, test_idx, init_path


def model_kwargs(text):
    """--model-kwargs: a JSON object."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def get_args_parser():
    """The flags (``bench.py -h``); --quick's sizes are set in ``main``."""
    p = argparse.ArgumentParser(description="Reference vs ours, side by side (see the module docstring).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--phases", default="step,eval,epoch,photo,demo",
                   help="comma-separated subset of step,eval,epoch,photo,demo,compile (compile: (d), photo: (e), "
                        "demo: (f) in the docstring)")
    p.add_argument("--configs", default="reference,ours",
                   help="reference first, then any of " + ",".join(CONFIGS[1:]) + " (see the docstring)")
    p.add_argument("--data-path", default=os.path.join(ROOT, "data", "BenchPed"),
                   help="Penn-Fudan-style folder; synthetic images are generated there if it is missing")
    p.add_argument("--num-images", default=40, type=int, help="synthetic images to generate")
    p.add_argument("--weights", default=None, help="start from this checkpoint instead of seeded random values")
    p.add_argument("--seed", default=0, type=int)
    p.add_argument("--batch-size", default=2, type=int)
    p.add_argument("--min-size", default=800, type=int, help="(a) and (b) model input size")
    p.add_argument("--max-size", default=1333, type=int)
    p.add_argument("--warmup", default=1, type=int,
                   help="(a) and (f): untimed steps first; 0 also skips the untimed first batch of (b) and (c)")
    p.add_argument("--steps", default=5, type=int,
                   help="(a) timed steps per configuration, each on a different batch")
    p.add_argument("--step-lr", default=0.005 / 1000, type=float,
                   help="(a) learning rate (the tutorial's first warm-up value: keeps random weights finite)")
    p.add_argument("--eval-images", default=10, type=int, help="(b) test images per evaluation pass")
    p.add_argument("--eval-repeats", default=2, type=int)
    p.add_argument("--epoch-train", default=8, type=int, help="(c) training images")
    p.add_argument("--epoch-test", default=4, type=int, help="(c) test images")
    p.add_argument("--epoch-min-size", default=512, type=int, help="(c) model input size")
    p.add_argument("--epoch-max-size", default=853, type=int)
    p.add_argument("--epoch-repeats", default=2, type=int)
    p.add_argument("--lr", default=1e-4, type=float,
                   help="(c) learning rate; the tutorial's 0.005 is for pretrained weights and diverges from "
                        "random values (use it with --weights)")
    p.add_argument("--compile-steps", default=12, type=int, help="(d) training steps per variant")
    p.add_argument("--photo-size", default=(4000, 3000), type=int, nargs=2, metavar=("WIDTH", "HEIGHT"),
                   help="(e) the photo's size")
    p.add_argument("--photo-repeats", default=2, type=int, help="(e) runs per configuration")
    p.add_argument("--demo-steps", default=20, type=int, help="(f) timed demo training steps per configuration")
    p.add_argument("--demo-data-path", default=os.path.join(ROOT, "data", "BenchDemoPed"),
                   help="(f) demo-sized synthetic images (generated there if missing)")
    p.add_argument("--compile-dynamic", action="store_true",
                   help="(d) torch.compile(dynamic=True): symbolic shapes from the first compile (default: off, "
                        "PyTorch's automatic dynamic shapes, which recompile once a shape changes)")
    p.add_argument("--model-kwargs", default={}, type=model_kwargs, metavar="JSON",
                   help="(a)-(d) keyword arguments for torchvision's MaskRCNN, e.g. smaller RPN/RoI counts for a smoke "
                        "run: '{\"box_batch_size_per_image\": 64}' ({}: torchvision's settings)")
    p.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"], help="ours: memory format")
    p.add_argument("--no-flops", dest="flops", action="store_false", help="skip the FLOP count of (a)")
    p.add_argument("--profile", action="store_true",
                   help="(a) also profile one more training step of each configuration but the reference")
    p.add_argument("--reuse-workers", action="store_true",
                   help="smoke run: one worker process per configuration for (a)-(c) and (f) instead of fresh ones "
                        "per phase; starts faster, but each peak RSS then covers the phases before it too")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 384 px, 1 timed step, 3 eval images, 4+2 images per epoch, 1 repeat each, "
                        "3 compile steps, --reuse-workers")
    p.add_argument("--out", default=os.path.join(ROOT, "output", "bench"), help="bench.json and worker logs")
    return p


def run_phases(phases, configs, args, spec_path, results):
    """Run ``phases`` one after another; each one's result goes into ``results`` as it finishes."""
    repeats = dict(step=args.steps, eval=args.eval_repeats, epoch=args.epoch_repeats, demo=args.demo_steps)
    shared = None
    if args.reuse_workers and any(p in PHASES + ("demo",) for p in phases):
        shared = {c: WorkerProcess(c, spec_path, os.path.join(args.out, f"workers_{c}.log")) for c in configs}
    try:
        for phase in phases:
            print(f"Phase {phase}:", flush=True)
            if phase == "compile":
                results[phase] = run_compile_phase(args.compile_steps, spec_path, args.out)
                continue
            if phase == "photo":
                results[phase] = run_photo_phase(args.photo_repeats, args, args.out)
                continue
            results[phase] = run_phase(phase, configs, repeats[phase], spec_path, args.out,
                                       extra="peak" if phase in ("step", "demo") else None,
                                       count_flops=phase == "step" and args.flops,
                                       profile=phase == "step" and args.profile, procs=shared)
            if phase == "eval":
                captured = {c: results[phase][c]["runs"][-1].pop("detections", None) for c in configs}
                if all(captured.values()):
                    results[phase]["agreement"] = {c: agreement(captured[configs[0]], captured[c]) for c in configs}
            if phase == "step":
                shapes = {c: [r["shapes"] for r in results[phase][c]["runs"]] for c in configs}
                if any(s != shapes[configs[0]] for s in shapes.values()):
                    print("warning: the configurations trained on different batch shapes", flush=True)
    finally:
        if shared:
            close_all(shared)


def _quick_sizes(args):
    """--quick: the smoke run's small sizes, one repeat each, and --reuse-workers."""
    args.min_size, args.max_size, args.steps, args.eval_images, args.eval_repeats = 384, 640, 1, 3, 1
    args.epoch_train, args.epoch_test, args.epoch_min_size, args.epoch_max_size = 4, 2, 256, 427
    args.epoch_repeats = 1
    args.compile_steps, args.photo_size, args.photo_repeats, args.demo_steps = 3, (1000, 750), 1, 3
    args.reuse_workers = True


def _parse_args(argv):
    """The flags of ``argv`` (--quick's sizes applied) and the checked ``--configs`` and ``--phases`` lists."""
    args = get_args_parser().parse_args(argv)
    # the workers run from the repository's root: paths typed relative to another folder must not change meaning
    for name in ("data_path", "demo_data_path", "out", "weights"):
        if getattr(args, name):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    if args.quick:
        _quick_sizes(args)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if configs[0] != "reference" or any(c not in CONFIGS for c in configs) or len(set(configs)) != len(configs):
        sys.exit(f"--configs: reference first, then any of {CONFIGS[1:]}")
    if any(p not in PHASES + ("photo", "demo", "compile") for p in phases):
        sys.exit(f"--phases: a subset of {PHASES + ('photo', 'demo', 'compile')}")
    return args, configs, phases


def _pick_device(args):
    """Settle --device auto (CUDA when present); exits on a CUDA device torch cannot see. Returns torch's version."""
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"--device {args.device}: torch {torch.__version__} sees no CUDA device "
                 "(torch.cuda.is_available() is False); run on a GPU machine or use --device cpu")
    return torch.__version__


def _write_spec(args):
    """Prepare the data and initial weights (Ctrl-C: exit 130) and write the workers' spec.json; returns its path."""
    try:
        train_idx, test_idx, init_path = prepare(args, args.out)
    except KeyboardInterrupt:  # data is generated in a temporary folder, the weights saved atomically
        print("\nCtrl-C: stopped while preparing the data and the initial weights; nothing was measured",
              file=sys.stderr)
        sys.exit(130)
    spec = dict(vars(args), init_weights=init_path, train_indices=train_idx, test_indices=test_idx)
    spec_path = os.path.join(args.out, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    return spec_path


def _run_until_ctrl_c(phases, configs, args, spec_path, results):
    """``run_phases``; on Ctrl-C, where it stopped (exits 130 if no phase finished), else None."""
    try:
        run_phases(phases, configs, args, spec_path, results)
    except KeyboardInterrupt:  # the workers got the same Ctrl-C; run_phase's cleanup has stopped them
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish writing what was measured
        unfinished = [p for p in phases if p not in results]
        # (a press while the last workers shut down finds every phase done)
        stopped_in = f"in phase {unfinished[0]}" if unfinished else "while the workers shut down"
        if not results:
            print(f"\nCtrl-C: stopped {stopped_in}, before any phase finished; nothing was written",
                  file=sys.stderr)
            sys.exit(130)
        return stopped_in
    return None


def _print_and_write(args, argv, info, results, configs):
    """Print the report and write bench.json and bench.txt into --out."""
    text = report(args, info, results, configs)
    print(text)
    flags = sys.argv[1:] if argv is None else argv
    cmd = " ".join([os.path.relpath(sys.executable, ROOT), "benchmarks/bench.py"] + flags)
    write_results(args.out, cmd, args, info, results, text)
    print(f"\nWrote {os.path.join(args.out, 'bench.json')} and bench.txt (worker logs: {args.out}/*.log); "
          f"took {info['wall_seconds']:.0f} s")


def main(argv=None):
    """The benchmark (``argv``: its flags); also the worker processes' entry (``--worker``, ``--photo-worker``)."""
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker_main(sys.argv[2], sys.argv[3])
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--photo-worker":
        return photo_worker(*sys.argv[2:7])
    args, configs, phases = _parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    torch_version = _pick_device(args)
    earlier = keep_earlier_run(args.out)
    if earlier:
        print(f"The earlier run in {args.out} is kept in {earlier}", flush=True)
    info = machine_info()
    info["torch"] = torch_version
    spec_path = _write_spec(args)

    results = {}
    started = time.time()
    stopped_in = _run_until_ctrl_c(phases, configs, args, spec_path, results)
    info["loadavg_end"] = os.getloadavg()
    info["wall_seconds"] = round(time.time() - started, 1)
    _print_and_write(args, argv, info, results, configs)
    if stopped_in:
        print(f"Ctrl-C: stopped {stopped_in}; the phases that finished are reported above", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
