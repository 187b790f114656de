"""Time the tutorial's whole run as a user runs it: ``benchmarks/tutorial_reference.py`` (torchvision's
stock behaviour) against ``tv_training.py``, one fresh process after another, on the same data,
weights, split and flags.

    python benchmarks/cli_timing.py                            # the tutorial's 2 epochs at 800 px, 170 images
    python benchmarks/cli_timing.py --configs reference fp32   # only these
    python benchmarks/cli_timing.py --num-images 12 --test-size 4 --min-size 64 --max-size 96   # toy sizes

The setup is not timed: synthetic Penn-Fudan-sized images (``finetune/data/synthetic.py``) and the
pretrained layout with random values (``--seed``) saved as a state dict, both in ``--out``, unless
``--data-path`` and ``--weights`` name a folder and a file. The configurations:

    reference  benchmarks/tutorial_reference.py
    fp32       tv_training.py --no-amp
    amp        tv_training.py --amp                 (bfloat16 on a CPU, float16 on a GPU)
    amp_eval   tv_training.py --amp --eval-bf16     (CPU only)

By default the reference and fp32, plus amp where the CPU has bfloat16 instructions or the run is on
a GPU, plus amp_eval on such a CPU. The report names the machine and gives, per configuration, the
wall time and its ratio to the reference's, seconds per training step and per evaluated image for
each epoch (from the log's "Total time" lines) with their ratios, the last epoch's mean training
loss and its difference from fp32's (fp32 and amp share their batches; the reference shuffles with
its own generator), peak RSS and the final bbox/segm AP. Writes ``results.json``, ``report.txt``
and each run's log and output folder to ``--out``. Ctrl-C stops after reporting the finished runs.
"""

import argparse
import os
import re
import shutil
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = {
    "reference": ("benchmarks/tutorial_reference.py", []),
    "fp32": ("tv_training.py", ["--no-amp"]),
    "amp": ("tv_training.py", ["--amp"]),
    "amp_eval": ("tv_training.py", ["--amp", "--eval-bf16"]),
}
# what a measurement leaves in --out (all that --overwrite removes)
OWN_FILES = re.compile(r"^((reference|fp32|amp|amp_eval)(\.log)?|data|layout\.pth|results\.json|report\.txt)$")
# the log lines of engine.train_one_epoch and the evaluation (torchvision's MetricLogger format)
EPOCH_TOTAL = re.compile(r"^Epoch: \[(\d+)\] Total time: \S+ \(([\d.]+) s / it\)")
EVAL_TOTAL = re.compile(r"^Test:\s+Total time: \S+ \(([\d.]+) s / it\)")
STEP_LINE = re.compile(r"^Epoch: \[(\d+)\]\s+\[\s*\d+/\d+\].*?\sloss: [\d.]+ \(([\d.]+)\)")
AP_LINE = re.compile(r"^ Average Precision  \(AP\) @\[ IoU=0\.50:0\.95 \| area=   all \| maxDets=100 \] = (-?[\d.]+)")


def parse_log(path):
    """Seconds per step and per test image for each epoch, each epoch's mean training loss (the last
    step line's running average) and the last evaluation's bbox/segm AP, from a run's log."""
    step_s, eval_s, losses, ap, metric = [], [], {}, {}, None
    with open(path) as f:
        for line in f:
            if m := EPOCH_TOTAL.match(line):
                step_s.append(float(m[2]))
            elif m := EVAL_TOTAL.match(line):
                eval_s.append(float(m[1]))
            elif m := STEP_LINE.match(line):
                losses[int(m[1])] = float(m[2])
            elif line.startswith("IoU metric: "):
                metric = line.split()[-1]
            elif (m := AP_LINE.match(line)) and metric:
                ap[metric], metric = float(m[1]), None
    return dict(step_seconds=step_s, eval_seconds_per_image=eval_s,
                epoch_losses=[losses[e] for e in sorted(losses)], bbox_AP=ap.get("bbox"), segm_AP=ap.get("segm"))


def default_configs(on_cuda, has_bf16):
    """The reference and fp32; amp where it pays (a GPU, or a CPU with bf16 instructions); amp_eval
    on such a CPU only (--eval-bf16 is for the CPU)."""
    return ["reference", "fp32"] + (["amp"] if on_cuda or has_bf16 else []) + \
        (["amp_eval"] if has_bf16 and not on_cuda else [])


def run_config(name, common, out_dir):
    """One fresh process of configuration ``name`` with the flags ``common``; returns its row."""
    from demo_timing import timed_process

    script, flags = CONFIGS[name]
    cmd = [sys.executable, os.path.join(ROOT, script), *common, *flags]
    if script == "tv_training.py":
        cmd += ["--output-dir", os.path.join(out_dir, name)]
    log = os.path.join(out_dir, name + ".log")
    wall, peak_rss_mib, returncode = timed_process(cmd, log)
    row = dict(name=name, command=" ".join(["python", script, *cmd[2:]]), wall_seconds=round(wall, 1),
               peak_rss_mib=peak_rss_mib, returncode=returncode, log=log)
    if returncode == 0:
        row.update(parse_log(log))
    return row


def add_ratios(rows):
    """Each finished row's speed-ups over the reference (wall, step and evaluation per epoch) and its
    last-epoch loss against fp32's, in percent."""
    done = {r["name"]: r for r in rows if r["returncode"] == 0}
    ref, fp32 = done.get("reference"), done.get("fp32")
    for r in done.values():
        if ref is not None and r is not ref:
            r["wall_ratio"] = round(ref["wall_seconds"] / r["wall_seconds"], 3)
            for key, ratio in (("step_seconds", "step_ratio"), ("eval_seconds_per_image", "eval_ratio")):
                r[ratio] = [round(a / b, 3) for a, b in zip(ref[key], r[key]) if b > 0]
        if fp32 is not None and r is not fp32 and fp32["epoch_losses"] and r["epoch_losses"]:
            r["loss_vs_fp32_percent"] = round(100 * (r["epoch_losses"][-1] / fp32["epoch_losses"][-1] - 1), 2)
    return rows


def _minutes(seconds):
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def _per_epoch(values, ratios=None, fmt="{:.2f}"):
    text = " / ".join(fmt.format(v) for v in values) or "-"
    if ratios:
        text += " (" + " / ".join(f"{x:.2f}x" for x in ratios) + ")"
    return text


def report(machine, setup, rows):
    lines = [f"Machine: {machine['cpu']}; torch {machine['torch']}; device {setup['device']}",
             f"Setup: {setup['describe']}",
             f"Flags for every run: {' '.join(setup['common'])}"]
    for r in rows:
        if r["returncode"] != 0:
            lines.append(f"{r['name']}: failed with exit status {r['returncode']} after {r['wall_seconds']:.0f} s: "
                         f"see {r['log']}")
            continue
        ratio = f" ({r['wall_ratio']:.2f}x)" if "wall_ratio" in r else ""
        loss = " / ".join(f"{x:.3f}" for x in r["epoch_losses"]) or "-"
        if "loss_vs_fp32_percent" in r:
            loss += f" (last {r['loss_vs_fp32_percent']:+.1f}% vs fp32)"
        ap = "-" if r["bbox_AP"] is None else f"{r['bbox_AP']:.3f} / {r['segm_AP']:.3f}"
        lines += [f"{r['name']}: wall {_minutes(r['wall_seconds'])}{ratio}, peak RSS {r['peak_rss_mib']} MiB",
                  f"    s/step per epoch {_per_epoch(r['step_seconds'], r.get('step_ratio'))}; "
                  f"eval s/img {_per_epoch(r['eval_seconds_per_image'], r.get('eval_ratio'))}",
                  f"    mean loss per epoch {loss}; bbox / segm AP {ap}"]
    lines.append("Ratios: the reference's time over the configuration's (above 1: faster than the reference).")
    return "\n".join(lines)


def prepare(args):
    """The data folder and weights file every run gets, made in --out unless given (not timed)."""
    import torch

    import tv_training
    import utils
    from finetune.data.synthetic import make_synthetic_pennfudan
    from finetune.models import pretrained

    data_path, made = args.data_path, []
    if data_path is None:
        data_path = os.path.join(args.out, "data", "PennFudanPed")
        print(f"Writing {args.num_images} synthetic Penn-Fudan-sized images to {data_path} ...", flush=True)
        make_synthetic_pennfudan(data_path, num_images=args.num_images, seed=args.seed)
        made.append(f"{args.num_images} synthetic Penn-Fudan-sized images (seed {args.seed})")
    weights = args.weights
    if weights is None:
        weights = os.path.join(args.out, "layout.pth")
        torch.manual_seed(args.seed)
        model = pretrained.build_detector(tv_training.get_model_instance_segmentation, "maskrcnn", 2, "layout")
        utils.atomic_save(model.state_dict(), weights)
        made.append(f"the pretrained layout with random values (seed {args.seed})")
    describe = "; ".join(made + ([f"data {data_path}"] if args.data_path else []) +
                         ([f"weights {weights}"] if args.weights else []))
    common = ["--data-path", data_path, "--weights", weights, "--epochs", str(args.epochs), "--lr", str(args.lr),
              "--test-size", str(args.test_size), "--seed", str(args.seed),
              "--min-size", str(args.min_size), "--max-size", str(args.max_size)]
    return dict(describe=describe, common=common)


def get_args_parser():
    p = argparse.ArgumentParser(description="Time the tutorial's whole run: the reference against tv_training.py "
                                "(see the docstring).", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=None,
                   help="what to run, in this order (default: reference fp32, then amp and amp_eval where they "
                        "pay, see the docstring)")
    p.add_argument("--data-path", default=None,
                   help="a Penn-Fudan-style folder; default: --num-images synthetic ones made in OUT/data")
    p.add_argument("--num-images", type=int, default=170, help="synthetic images to make (the tutorial's 170)")
    p.add_argument("--weights", default=None,
                   help="state dict or checkpoint to start from; default: the pretrained layout with random values, "
                        "saved in OUT/layout.pth (nothing is downloaded)")
    p.add_argument("--epochs", type=int, default=2, help="epochs (the tutorial's 2)")
    p.add_argument("--lr", type=float, default=0.0001,
                   help="SGD learning rate; the tutorial's 0.005 diverges from random values")
    p.add_argument("--test-size", type=int, default=50, help="test images (the tutorial's 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the synthetic images and the weights")
    p.add_argument("--min-size", type=int, default=800, help="model input size (torchvision's 800)")
    p.add_argument("--max-size", type=int, default=1333, help="model input size (torchvision's 1333)")
    p.add_argument("--out", default=os.path.join(ROOT, "output", "cli_timing"),
                   help="results.json, report.txt, the data, weights, and each run's log and output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier measurement in --out")
    return p


def check_args(args):
    """One line and exit status 2 for a bad value, before anything is written."""
    def fail(message):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)

    if args.configs and len(set(args.configs)) != len(args.configs):
        fail(f"--configs: {' '.join(args.configs)} names a configuration twice; give each once")
    if args.epochs < 1 or args.test_size < 1 or args.lr <= 0:
        fail("--epochs and --test-size must be at least 1 and --lr above 0")
    if args.min_size < 32 or args.max_size < args.min_size:
        fail(f"--min-size {args.min_size} --max-size {args.max_size}: give 32 <= --min-size <= --max-size")
    if args.data_path is None and args.num_images < args.test_size + 2:
        fail(f"--num-images {args.num_images}: give at least --test-size + 2 ({args.test_size + 2}), "
             "so a training batch remains")
    if args.data_path is not None and not os.path.isdir(os.path.join(args.data_path, "PNGImages")):
        fail(f"--data-path {args.data_path}: holds no PNGImages/ folder; pass a Penn-Fudan-style folder, or leave "
             "--data-path out to make synthetic images")
    if args.weights is not None and not os.path.isfile(args.weights):
        fail(f"--weights {args.weights}: no such file; pass a state dict or checkpoint, or leave --weights out")


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    args.out = os.path.abspath(args.out)  # the runs start in the repository's root
    check_args(args)
    sys.path[:0] = [p for p in (ROOT, HERE) if p not in sys.path]  # the project, and demo_timing.py beside this
    from demo_timing import describe_machine, empty_out_folder, write_report

    empty_out_folder(args.out, OWN_FILES, args.overwrite)
    import torch

    from finetune.hardware import cpu_has_bf16

    on_cuda = torch.cuda.is_available()
    machine = describe_machine()
    configs = args.configs or default_configs(on_cuda, cpu_has_bf16())
    print(f"Machine: {machine['cpu']}; torch {machine['torch']}; runs: {' '.join(configs)}", flush=True)
    rows, failed, interrupted, setup = [], None, False, None
    try:
        setup = dict(prepare(args), device="cuda" if on_cuda else "cpu")
        for name in configs:
            print(f"{name}: running, log in {os.path.join(args.out, name + '.log')}", flush=True)
            row = run_config(name, setup["common"], args.out)
            rows.append(row)
            if row["returncode"] != 0:
                with open(row["log"]) as f:
                    last = "".join(f.readlines()[-3:])
                failed = f"{name} failed (exit status {row['returncode']}); the end of {row['log']}:\n{last}".rstrip()
                break
            print(f"{name}: {_minutes(row['wall_seconds'])}", flush=True)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish writing what was measured
        interrupted = True
    if setup is None:  # stopped while making the data or weights: remove them, so the folder is as it was
        for name in ("data", "layout.pth"):
            path = os.path.join(args.out, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.exists(path):
                os.remove(path)
        print(f"Ctrl-C: stopped before the first run; nothing was measured or kept in {args.out}", file=sys.stderr)
        sys.exit(130)
    add_ratios(rows)
    text = report(machine, setup, rows)
    return write_report(args.out, dict(machine=machine, setup=setup, runs=rows), text, failed, interrupted)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # before the first run started (importing torch, checking --out): nothing to report
        print("Ctrl-C: stopped before the first run; nothing was measured", file=sys.stderr)
        sys.exit(130)
