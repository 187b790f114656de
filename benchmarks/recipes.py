"""The recipes table of docs/recipes.md: each --data-augmentation preset with the demo's model (and lsj
with --use-copypaste), and each --model with hflip, trained the same way on the synthetic COCO data,
two seeds each.

    python benchmarks/recipes.py                          # the full table (its estimate printed first)
    python benchmarks/recipes.py --quick                  # a toy size, to check the script itself
    python benchmarks/recipes.py --models maskrcnn fasterrcnn --seeds 0

Runs already done in ``--out`` at the same budget (``results.json``) are kept, not run again: an interrupted
table goes on where it stopped, and rows can be added by a later command.

The data is ``python -m finetune.data.synthetic DIR --coco NUM_VAL`` (pedestrians, balls and signs:
three classes; crowd regions and empty images included). Every run is a fresh ``tv_training.py
--demo`` process (the demo's from-scratch recipe, random init: nothing is downloaded) with the same
epochs, sizes and seed set, so rows differ only by the preset or the model. The table gives, per row,
the mean over the seeds of the last epoch's bbox and segm AP (box-only models: bbox only) and of the
training seconds per epoch, and names the CPU (model name, family/model, bf16/AMX flags). Writes
``results.json``, ``table.md`` and each run's log and folder to ``--out``.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS = ("hflip", "lsj", "multiscale", "ssd", "ssdlite")
# the demo model's rows: each preset, and lsj with --use-copypaste (train.py's recipe for the v2 models)
COPY_PASTE = "lsj+copypaste"
ROWS = PRESETS + (COPY_PASTE,)
DEMO_MODEL = "maskrcnn_resnet18"
# the full table's budget and data: 150 training and 30 test images of the demo's sizes, 4 epochs at the demo's
# --min-size/--max-size: the least at which the demo's model reaches an AP that tells presets apart (at 48 images
# and 2 epochs every AP was under 0.01)
FULL = dict(num_train=150, num_val=30, height=(128, 160), width=(96, 224), epochs=4, min_size=128, max_size=224)
QUICK = dict(num_train=6, num_val=2, height=(64, 80), width=(64, 96), epochs=1, min_size=64, max_size=96)
# training seconds per image and epoch, for the estimate printed before the runs: the full table's, measured on the
# AMD EPYC (family 25, model 17, 2 cores, bfloat16 autocast; docs/recipes.md); a model not here is assumed at
# ASSUMED_SECONDS_PER_IMAGE, and the progress lines then project the rest from the runs done
SECONDS_PER_IMAGE = {"maskrcnn_resnet18": 0.09, "fasterrcnn_mobilenet_v3": 0.11, "fasterrcnn": 0.26, "maskrcnn": 0.33,
                     "mobilenet": 0.33, "fasterrcnn_v2": 0.35, "maskrcnn_v2": 0.44}
SIZED_PRESET_COST = 1.0  # lsj's and multiscale's sizes at the demo's --min-size: about the model's own resize
ASSUMED_SECONDS_PER_IMAGE = 0.5


def model_choices():
    """Every ``--model`` of tv_training.py (imported here: this process sets nothing before torch loads)."""
    sys.path.insert(0, ROOT)
    import tv_training

    return sorted(tv_training.MODELS)


def cpu_line():
    """The CPU as lscpu names it: model name, family/model, and its bf16/AMX flags."""
    fields = {}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in text.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    flags = sorted(f for f in fields.get("Flags", "").split() if "bf16" in f or f.startswith("amx"))
    family, model = fields.get("CPU family", "?"), fields.get("Model", "?")
    return (f"{fields.get('Model name', '?')} (family {family}, model {model}), {os.cpu_count()} cores; "
            f"bf16/AMX flags: {' '.join(flags) or 'none'}")


def make_data(root, budget):
    """The synthetic COCO files (train.json, val.json) in ``root``, written once."""
    if not os.path.isfile(os.path.join(root, "val.json")):
        subprocess.run([sys.executable, "-m", "finetune.data.synthetic", root, "--coco", str(budget["num_val"]),
                        "--num-images", str(budget["num_train"]), "--height", *map(str, budget["height"]),
                        "--width", *map(str, budget["width"])], cwd=ROOT, check=True)
    return os.path.join(root, "train.json"), os.path.join(root, "val.json")


def preset_flags(preset):
    """The tv_training.py flags of a row's preset (``COPY_PASTE``: lsj with --use-copypaste)."""
    if preset == COPY_PASTE:
        return ["--data-augmentation", "lsj", "--use-copypaste"]
    return ["--data-augmentation", preset]


def plan(models, seeds, presets=ROWS):
    """The runs, as (row, model, preset, seed): the presets with the demo's model, then each other model with hflip."""
    rows = [(" ".join(preset_flags(p)), DEMO_MODEL, p) for p in presets]
    rows += [(f"--model {m}", m, "hflip") for m in models if m != DEMO_MODEL]
    return [(row, model, preset, seed) for row, model, preset in rows for seed in seeds]


def estimate_seconds(runs, budget):
    """What the runs should take: training at ``SECONDS_PER_IMAGE``, evaluation at a third of it per test image."""
    total = 0.0
    for _, model, preset, _ in runs:
        per_image = SECONDS_PER_IMAGE.get(model, ASSUMED_SECONDS_PER_IMAGE)
        per_image *= SIZED_PRESET_COST if preset in ("lsj", "multiscale", COPY_PASTE) else 1
        total += budget["epochs"] * per_image * (budget["num_train"] + budget["num_val"] / 3) + 12  # + starting
    return total


def run_one(model, preset, seed, data, budget, out_dir):
    """One ``tv_training.py --demo`` run; returns its row values (mean epoch seconds, last bbox/segm AP)."""
    train, val = data
    cmd = [sys.executable, "tv_training.py", "--demo", "--data-path", train, "--test-data-path", val,
           "--model", model, *preset_flags(preset), "--seed", str(seed), "--epochs", str(budget["epochs"]),
           "--min-size", str(budget["min_size"]), "--max-size", str(budget["max_size"]), "--output-dir", out_dir,
           "--overwrite", "--print-freq", "1000"]
    with open(out_dir + ".log", "w") as log:
        status = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    if status != 0:
        return dict(returncode=status)
    with open(os.path.join(out_dir, "metrics.json")) as f:
        records = json.load(f)
    last = records[-1]
    return dict(returncode=0, epoch_seconds=sum(r["train_time_s"] for r in records) / len(records),
                bbox=last["bbox"]["AP"], segm=last.get("segm", {}).get("AP"))


def earlier_runs(path, cpu, budget):
    """The successful runs of an earlier command in the same ``--out`` with the same CPU and budget, by
    (model, preset, seed); none when the file is missing or was written for another CPU or budget."""
    try:
        with open(path) as f:
            earlier = json.load(f)
    except (OSError, ValueError):
        return {}
    if earlier.get("cpu") != cpu or earlier.get("budget") != json.loads(json.dumps(budget)):
        print(f"{path} was measured on another CPU or budget: its runs are done again", flush=True)
        return {}
    return {(r["model"], r["preset"], r["seed"]): r for r in earlier.get("runs", []) if r.get("returncode") == 0}


def write_json(path, value):
    """``value`` as JSON at ``path``, whole or not at all (a Ctrl-C keeps the last complete file)."""
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=1)
    os.replace(path + ".tmp", path)


def mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def table(results, cpu, budget, seeds):
    """The markdown table: one line per row, means over the seeds."""
    lines = [f"Measured on {cpu}; synthetic COCO data ({budget['num_train']} training, {budget['num_val']} test "
             f"images, 3 classes), --demo's recipe (random init), {budget['epochs']} epochs at --min-size "
             f"{budget['min_size']} --max-size {budget['max_size']}, seeds {', '.join(map(str, seeds))}.", "",
             "| run | bbox AP | segm AP | s / epoch |", "|---|---|---|---|"]
    for row in dict.fromkeys(r["row"] for r in results):
        runs = [r for r in results if r["row"] == row and r["returncode"] == 0]
        if not runs:
            lines.append(f"| {row} | failed | failed | |")
            continue
        segm = mean([r["segm"] for r in runs])
        if len(runs) < len(seeds):  # a failed run: the mean is of fewer seeds than the header says
            row = f"{row} (seed {', '.join(str(r['seed']) for r in runs)} only)"
        lines.append(f"| {row} | {mean([r['bbox'] for r in runs]):.3f} | "
                     f"{'-' if segm is None else f'{segm:.3f}'} | {mean([r['epoch_seconds'] for r in runs]):.1f} |")
    return "\n".join(lines)


def positive_int(text):
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def non_negative_int(text):
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return int(text)


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", nargs="+", default=None,
                   help="the models of the hflip rows (default None: every --model choice of tv_training.py)")
    p.add_argument("--seeds", nargs="+", type=non_negative_int, default=[0, 1], help="the seeds of every row")
    p.add_argument("--presets", nargs="+", default=list(ROWS), choices=ROWS,
                   help=f"the presets of the demo model's rows ({COPY_PASTE}: lsj with --use-copypaste)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="epochs per run (default None: the budget's, 4; --quick: 1)")
    p.add_argument("--quick", action="store_true", help="a toy size (6 images, 1 epoch, 64 px) to check the script")
    p.add_argument("--out", default="output/recipes", help="where the data, runs, results.json and table.md go")
    return p


def main(argv=None):
    parser = get_args_parser()
    args = parser.parse_args(argv)
    args.out = os.path.abspath(args.out)  # the runs start in the repository's root
    budget = dict(QUICK if args.quick else FULL)
    budget["epochs"] = args.epochs or budget["epochs"]
    choices = model_choices()
    unknown = [m for m in args.models or [] if m not in choices]
    if unknown:
        parser.error(f"argument --models: not a --model of tv_training.py: {', '.join(unknown)} "
                     f"(choose from {', '.join(choices)})")
    models = args.models or choices
    runs = plan(models, args.seeds, args.presets)
    os.makedirs(args.out, exist_ok=True)
    cpu = cpu_line()
    print(f"{len(runs)} runs on {cpu}; estimated {estimate_seconds(runs, budget) / 60:.0f} min", flush=True)
    data = make_data(os.path.join(args.out, "data-quick" if args.quick else "data"), budget)
    results_file = os.path.join(args.out, "results.json")
    done = earlier_runs(results_file, cpu, budget)
    results, start, ran = [], time.perf_counter(), 0
    for i, (row, model, preset, seed) in enumerate(runs, 1):
        name = f"{model}_{preset}_seed{seed}"
        if (model, preset, seed) in done:
            results.append(done[model, preset, seed])
            print(f"[{i}/{len(runs)}] {name}: kept from {results_file}", flush=True)
            continue
        try:
            result = dict(row=row, model=model, preset=preset, seed=seed,
                          **run_one(model, preset, seed, data, budget, os.path.join(args.out, name)))
        except KeyboardInterrupt:  # the run under way is lost; the ones done are in results.json already
            print(f"interrupted during {name}: the {len(done)} runs done are kept in {results_file}; the same "
                  f"command goes on from them", file=sys.stderr)
            sys.exit(130)
        results.append(result)
        if result["returncode"] == 0:
            done[model, preset, seed] = result
            write_json(results_file, dict(cpu=cpu, budget=budget, runs=list(done.values())))
        ran += 1
        elapsed = time.perf_counter() - start
        left = len(runs) - i
        print(f"[{i}/{len(runs)}] {name}: {result} ({elapsed / 60:.1f} min, about "
              f"{elapsed / ran * left / 60:.1f} min left)", flush=True)
    text = table(results, cpu, budget, args.seeds)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    return dict(results=results, table=text)


if __name__ == "__main__":
    sys.exit(0 if all(r["returncode"] == 0 for r in main()["results"]) else 1)
