"""Time and score the README's first command, ``python tv_training.py --demo``, seed by seed.

Every run is a fresh ``tv_training.py --demo`` process with an output folder of its own. The
first run generates the demo's synthetic data (as a newcomer's first run does, so its wall time
is the one to compare with the demo's target); the later runs reuse the data. The report names
the machine (CPU model, bf16/AMX flags, cores, torch), gives one row per run (wall time, peak
RSS, final bbox/segm AP and AP50) and the mean over the seeds of each precision, against the
demo's targets (docs/demo.md):

    python benchmarks/demo_timing.py                           # seeds 0 and 1, the demo's precision
    python benchmarks/demo_timing.py --precisions auto fp32    # and float32 (--no-amp)
    python benchmarks/demo_timing.py --seeds 0 --threads 1 2   # OMP_NUM_THREADS=1, then 2
    python benchmarks/demo_timing.py -- --epochs 6             # flags after -- go to tv_training.py

Runs go one after another, so their ratios compare; times on a busy machine grow. Writes
``results.json``, ``report.txt`` and each run's log and folder to ``--out``.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRECISION_FLAGS = {"auto": [], "fp32": ["--no-amp"], "bf16": ["--amp"]}
# docs/demo.md: mean over seeds 0 and 1, and the first run's wall time
TARGET_AP = dict(bbox=0.55, segm=0.40)
TARGET_WALL = "≤ 4 min on the AMD EPYC, ≤ 6 min on the Intel Xeon with AMX (2 cores)"
# what a measurement leaves in --out (all that --overwrite removes)
OWN_FILES = re.compile(r"^((auto|fp32|bf16)_seed\d+(_threads\d+)?(\.log)?|data|results\.json|report\.txt)$")


def final_scores(output_dir):
    """The last epoch of ``metrics.json``: bbox/segm AP and AP50, and the summed training time."""
    with open(os.path.join(output_dir, "metrics.json")) as f:
        records = json.load(f)
    last = records[-1]
    return dict(epochs=len(records), train_seconds=round(sum(r["train_time_s"] for r in records), 1),
                **{f"{iou}_{k}": last[iou][k] for iou in ("bbox", "segm") for k in ("AP", "AP50")})


def timed_process(cmd, log_path, env=None):
    """Run ``cmd`` from the project root with its output in ``log_path``; returns its wall seconds,
    peak RSS in MiB (the process and the workers it waited for, as ``/usr/bin/time`` counts it) and
    exit status."""
    with open(log_path, "w") as log:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except KeyboardInterrupt:  # the run got the same Ctrl-C: let it stop cleanly
            proc.wait()
            raise
        wall = time.perf_counter() - t
    return wall, round(usage.ru_maxrss / 1024), os.waitstatus_to_exitcode(status)


def empty_out_folder(out, own_files, overwrite):
    """Make ``out`` an empty folder, removing an earlier measurement (the names ``own_files``
    matches) only with ``overwrite``; exits with one line for a file, foreign files or an earlier
    measurement kept."""
    if os.path.exists(out) and not os.path.isdir(out):
        sys.exit(f"--out {out}: is a file; give a folder")
    if os.path.isdir(out) and os.listdir(out):
        foreign = [n for n in os.listdir(out) if not own_files.match(n)]
        if foreign:
            sys.exit(f"{out}: holds files this script did not write ({', '.join(sorted(foreign)[:3])}); "
                     "pass another --out")
        if not overwrite:
            sys.exit(f"{out}: holds an earlier measurement; pass --overwrite to replace it, or another --out")
        for name in os.listdir(out):
            path = os.path.join(out, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    os.makedirs(out, exist_ok=True)


def describe_machine():
    """CPU model, cores and bf16/AMX flags; torch and Python versions (after ``ROOT`` and this folder
    are on ``sys.path``)."""
    import bench_report
    import torch

    info = bench_report.machine_info()
    cpu = f"{info['cpu']}, {info['cores']} cores; bf16 flags: {' '.join(info.get('bf16_flags', [])) or 'none'}"
    return dict(cpu=cpu, torch=torch.__version__, python=info["python"])


def write_report(out, results, text, failed, interrupted):
    """Write ``results.json`` and ``report.txt`` to ``out`` and print the report; then exit with the
    failed run's message, or 130 after a Ctrl-C, or return ``results``."""
    from finetune.outputs import writing

    writing.write_json_atomic(results, os.path.join(out, "results.json"))
    writing.write_text_atomic(text + "\n", os.path.join(out, "report.txt"))
    print(text)
    if failed:
        sys.exit(failed)
    if interrupted:
        print(f"Ctrl-C: stopped after {len(results['runs'])} finished run(s), reported above and in {out}",
              file=sys.stderr)
        sys.exit(130)
    return results


def run_demo(name, seed, precision, threads, data_path, extra, out_dir):
    """One ``tv_training.py --demo`` process; returns its row (wall, peak RSS, final scores)."""
    run_dir = os.path.join(out_dir, name)
    cmd = [sys.executable, os.path.join(ROOT, "tv_training.py"), "--demo", "--seed", str(seed),
           "--data-path", data_path, "--output-dir", run_dir, *PRECISION_FLAGS[precision], *extra]
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    generates = not os.path.isdir(data_path)
    wall, peak_rss_mib, returncode = timed_process(cmd, run_dir + ".log", env)
    row = dict(name=name, seed=seed, precision=precision, threads=threads, generated_data=generates,
               wall_seconds=round(wall, 1), peak_rss_mib=peak_rss_mib, returncode=returncode, log=run_dir + ".log")
    if row["returncode"] == 0:
        row.update(final_scores(run_dir), trained_in=trained_in(row["log"]))
    return row


def trained_in(log_path):
    """What the run's "Demo:" line says it trained in: bf16 or fp32 (what ``auto`` became)."""
    with open(log_path) as f:
        for line in f:
            if line.startswith("Demo: "):
                return "bf16" if "bfloat16 autocast" in line else "fp32"
    return "?"


def run_all(settings, seeds, data_path, extra, out_dir, rows):
    """Every (precision, threads) setting for every seed, one after another; appends each run's row
    to ``rows``. Stops at a failed run (a bad flag or bad data fails the next runs alike) and
    returns its message; None when all ran."""
    for precision, threads in settings:
        for seed in seeds:
            name = f"{precision}_seed{seed}" + (f"_threads{threads}" if threads is not None else "")
            row = run_demo(name, seed, precision, threads, data_path, extra, out_dir)
            rows.append(row)
            if row["returncode"] != 0:
                with open(row["log"]) as f:
                    last = "".join(f.readlines()[-3:])
                return f"{name} failed (exit status {row['returncode']}); the end of {row['log']}:\n{last}".rstrip()
            print(f"{name}: {row['wall_seconds']:.0f} s, bbox AP {row['bbox_AP']:.3f}, segm AP {row['segm_AP']:.3f}",
                  flush=True)
    return None


def summarize(rows):
    """The mean bbox/segm AP over the seeds of each (precision, threads), for the finished runs."""
    groups = {}
    for row in rows:
        if row["returncode"] == 0:
            groups.setdefault((row["precision"], row["threads"]), []).append(row)
    return [dict(precision=p, trained_in="/".join(sorted({r["trained_in"] for r in g})), threads=t, runs=len(g),
                 wall_seconds=round(sum(r["wall_seconds"] for r in g) / len(g), 1),
                 **{k: sum(r[k] for r in g) / len(g) for k in ("bbox_AP", "segm_AP")})
            for (p, t), g in groups.items()]


def report(machine, rows, means, extra):
    lines = [f"Machine: {machine['cpu']}; torch {machine['torch']}",
             f"Command: tv_training.py --demo --seed S [precision flag] {' '.join(extra)}".rstrip(),
             f"{'run':28s} {'wall':>8s} {'peak RSS':>9s} {'bbox AP':>8s} {'AP50':>6s} {'segm AP':>8s} {'AP50':>6s}"]
    for r in rows:
        wall = f"{r['wall_seconds']:.0f} s" + ("*" if r["generated_data"] else "")
        if r["returncode"] != 0:
            lines.append(f"{r['name']:28s} {wall:>8s}  failed with exit status {r['returncode']}: see {r['log']}")
            continue
        lines.append(f"{r['name'] + ' (' + r['trained_in'] + ')':28s} {wall:>8s} {r['peak_rss_mib']:>5d} MiB"
                     f" {r['bbox_AP']:8.3f} {r['bbox_AP50']:6.3f}"
                     f" {r['segm_AP']:8.3f} {r['segm_AP50']:6.3f}")
    if any(r["generated_data"] for r in rows):
        lines.append("* data generation included (as in a fresh clone's first run)")
    for m in means:
        met = all(m[f"{k}_AP"] >= v for k, v in TARGET_AP.items())
        threads = f", OMP_NUM_THREADS={m['threads']}" if m["threads"] is not None else ""
        lines.append(f"mean of {m['runs']} seed(s), {m['precision']} ({m['trained_in']}){threads}: "
                     f"bbox AP {m['bbox_AP']:.3f}, "
                     f"segm AP {m['segm_AP']:.3f}, wall {m['wall_seconds']:.0f} s "
                     f"(target: bbox AP ≥ {TARGET_AP['bbox']:.2f}, segm AP ≥ {TARGET_AP['segm']:.2f}: "
                     f"{'met' if met else 'missed'})")
    lines.append(f"Wall-time target of the first run: {TARGET_WALL}")
    return "\n".join(lines)


def get_args_parser():
    p = argparse.ArgumentParser(description="Time and score tv_training.py --demo, seed by seed (see the docstring).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seeds", default=[0, 1], type=int, nargs="+", help="one run per seed and setting")
    p.add_argument("--precisions", default=["auto"], nargs="+", choices=sorted(PRECISION_FLAGS),
                   help="auto: the demo's choice (bfloat16 on CPUs with bf16 instructions); fp32: --no-amp; "
                        "bf16: --amp")
    p.add_argument("--threads", default=None, type=int, nargs="+",
                   help="OMP_NUM_THREADS values to run each setting with (default: the environment's)")
    p.add_argument("--data-path", default=None,
                   help="demo data to use; default: generated in OUT/data by the first run (timed with it)")
    p.add_argument("--out", default=os.path.join(ROOT, "output", "demo_timing"),
                   help="results.json, report.txt, each run's log and output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier measurement in --out")
    p.add_argument("extra", nargs="*", help="after --: more tv_training.py flags for every run (e.g. -- --epochs 6)")
    return p


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    args.out = os.path.abspath(args.out)  # the runs start in the repository's root
    if any(t < 1 for t in args.threads or []):
        sys.exit("--threads: each value must be 1 or more")
    for flag, values in (("--seeds", args.seeds), ("--precisions", args.precisions), ("--threads", args.threads)):
        if values and len(set(values)) != len(values):
            sys.exit(f"{flag}: {' '.join(map(str, values))} names a value twice; give each once")
    empty_out_folder(args.out, OWN_FILES, args.overwrite)
    data_path = os.path.abspath(args.data_path or os.path.join(args.out, "data"))
    # the project, and bench_report.py beside this file
    sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]

    machine = describe_machine()
    print(f"Machine: {machine['cpu']}; torch {machine['torch']}", flush=True)
    settings = [(p, t) for p in args.precisions for t in (args.threads or [None])]
    rows, failed, interrupted = [], None, False
    try:
        failed = run_all(settings, args.seeds, data_path, args.extra, args.out, rows)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish writing what was measured
        interrupted = True
    means = summarize(rows)
    text = report(machine, rows, means, args.extra)
    results = dict(machine=machine, extra=args.extra, runs=rows, means=means)
    return write_report(args.out, results, text, failed, interrupted)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # before the first run started (importing torch, checking --out): nothing to report
        print("Ctrl-C: stopped before the first run; nothing was measured", file=sys.stderr)
        sys.exit(130)
