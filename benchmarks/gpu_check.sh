#!/usr/bin/env bash
# The GPU check: one command for a machine with a CUDA GPU, about 4 minutes for parts 1-3 on one H100. Each part
# stops at its own limit (150 s; the suite 240 s, the command line 300 s), and all of them together at BUDGET
# seconds (default 330): a part that would start with under 20 s left is skipped and named, so the check fits
# in a lent GPU's time with room to run it again.
#
#   bash benchmarks/gpu_check.sh            # writes output/gpu_check/, prints one summary at the end
#
# 1. the CUDA tests (pytest -m cuda): every model trains and evaluates, fp32 and --amp; the
#    speed-ups equal stock torchvision; checkpoints move between CUDA and the CPU; --predict;
#    torchrun with NCCL;
# 2. benchmarks/bench.py on the GPU: the tutorial's training step at 800/1333 px, batch 2
#    (pretrained layout, synthetic data, nothing downloaded), reference / ours float32 / ours
#    bfloat16 (no GradScaler) / ours + --amp (float16 + GradScaler), s/step the median of 20 steps
#    after 3 warm-up steps, evaluation per image, peak GPU memory, a profiler table of one step and
#    the GPU's busy fraction in it;
# 3. python tv_training.py --demo on the GPU: wall time and final bbox/segm AP;
# 4. the whole suite on this machine's CPU (the GPU hidden), i.e. under the torch and torchvision
#    the GPU machine has, which are not the pinned pair;
# 5. benchmarks/count_ops.py: the host syncs and ops of a training step and an evaluation,
#    stock / ours / ours sync-free (CPU; the ops a GPU runs);
# 6. benchmarks/cli_timing.py: the tutorial's whole 2-epoch command line, reference against ours
#    (float32 and --amp), on the GPU (its own limit, 300 s; not in the default PARTS).
#
# PARTS=1,3,4 runs only those parts (default: 1,2,3,5; PARTS=1,2,3,4,5,6 for all). Part 4 is left out by default:
# CI runs the suite on the GPU machines' torch / torchvision pair already (.ci/run).
# No package registry is needed: if pycocotools is missing it is installed from the wheels in
# $WHEELS (default .whl/; a CPU machine fetches it with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl pycocotools).
#
# DEVICE=cpu QUICK=1 runs the same steps at toy sizes on a machine without a GPU, to check the script.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
if [ -n "${QUICK:-}" ]; then  # toy sizes: checks the plumbing, measures nothing
    BENCH_SIZES="--quick"; DEMO_SIZES="--epochs 1 --train-size 10 --test-size 4"; STEPS=2; EVAL_IMAGES=3
    COUNT_SIZES="--size 128 --eval-images 1"; BENCH_CONFIGS=reference,ours_bf16
    CLI_SIZES="--num-images 12 --test-size 4 --min-size 64 --max-size 96 --epochs 1 --configs reference fp32"
else
    BENCH_SIZES=""; DEMO_SIZES=""; STEPS=20; EVAL_IMAGES=10; COUNT_SIZES=""; CLI_SIZES=""
    BENCH_CONFIGS=reference,ours,ours_bf16,ours_amp
fi
OUT=${OUT_DIR:-output/gpu_check}
PARTS=",${PARTS:-1,2,3,5},"
BUDGET=${BUDGET:-330}
skipped=""
# part N LIMIT: whether part N runs, with LIMIT (its own) or what is left of BUDGET, if less, in $limit
part() {
    [[ "$PARTS" == *",$1,"* ]] || return 1
    local left=$(( BUDGET - ($(date +%s) - start) ))
    limit=$(( left < $2 ? left : $2 ))
    if (( limit < 20 )); then
        echo "== part $1 skipped: ${left} s left of BUDGET=${BUDGET}"
        skipped="$skipped $1"
        return 1
    fi
}
WHEELS=${WHEELS:-.whl}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

if ! $PY -c "import pycocotools" 2>/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target "$OUT/site" "$WHEELS"/pycocotools-*.whl \
        || { echo "pycocotools is missing and no wheel was found in $WHEELS/"; exit 1; }
    export PYTHONPATH="$PWD/$OUT/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ "$DEVICE" = cuda ]; then
    $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU: torch.cuda.is_available() is False')" || exit 1
fi

ran=""
stopped=""
# finished N STATUS [LOG]: part N has run; one its limit stopped is named, another failure shows LOG's end
finished() {
    ran="$ran $1"
    if [ "$2" = 124 ] || [ "$2" = 137 ]; then
        echo "   part $1 stopped at its limit (${limit} s)"
        stopped="$stopped $1"
    elif [ "$2" != 0 ] && [ -n "${3:-}" ]; then
        tail -20 "$3"
    fi
}

start=$(date +%s)
if part 1 150; then
    echo "== 1/6 CUDA tests"
    CUDA_TESTS_DEVICE=$DEVICE timeout $limit $PY -m pytest -q -m cuda tests/finetune/speedups/test_cuda.py -p no:cacheprovider 2>&1 \
        | tee "$OUT/cuda_tests.log" | tail -5
    finished 1 $?
fi
if part 2 150; then
    echo "== 2/6 benchmark: the tutorial's step and evaluation"
    timeout $limit $PY benchmarks/bench.py --device "$DEVICE" --configs $BENCH_CONFIGS --phases step,eval \
        $BENCH_SIZES --warmup 3 --steps $STEPS --eval-images $EVAL_IMAGES --eval-repeats 2 --no-flops --profile \
        --num-images 40 --data-path "$OUT/BenchPed" --out "$OUT/bench" > "$OUT/bench.log" 2>&1
    finished 2 $? "$OUT/bench.log"
fi
demo_ms=0
if part 3 150; then
    echo "== 3/6 --demo on the GPU"
    demo_start=$(date +%s%N)
    timeout $limit $PY tv_training.py --demo --device "$DEVICE" --data-path "$OUT/SyntheticPed" --output-dir "$OUT/demo" \
        --overwrite $DEMO_SIZES > "$OUT/demo.log" 2>&1
    finished 3 $? "$OUT/demo.log"
    demo_ms=$(( ($(date +%s%N) - demo_start) / 1000000 ))  # bash arithmetic: the image may lack bc
fi
if part 4 240; then
    echo "== 4/6 the suite on the CPU under this machine's torch (the GPU hidden)"
    CUDA_VISIBLE_DEVICES= timeout $limit $PY -m pytest -q -m "not cuda" -p no:cacheprovider > "$OUT/cpu_suite.log" 2>&1
    finished 4 $?
    grep -E "^(FAILED|ERROR)" "$OUT/cpu_suite.log" | head -20
fi
if part 5 150; then
    echo "== 5/6 host syncs and ops per step (CPU counter)"
    timeout $limit $PY benchmarks/count_ops.py $COUNT_SIZES --json "$OUT/count_ops.json" > "$OUT/count_ops.log" 2>&1
    finished 5 $? "$OUT/count_ops.log"
fi
if part 6 300; then
    echo "== 6/6 the whole command line, reference against ours"
    timeout $limit $PY benchmarks/cli_timing.py $CLI_SIZES --out "$OUT/cli_timing" --overwrite \
        > "$OUT/cli_timing.log" 2>&1
    finished 6 $? "$OUT/cli_timing.log"
fi

OUT="$OUT" EVAL_IMAGES=$EVAL_IMAGES DEMO_MS="$demo_ms" TOTAL_SECONDS=$(( $(date +%s) - start )) SKIPPED="$skipped" \
    BUDGET="$BUDGET" RAN="$ran" STOPPED="$stopped" $PY - <<'PYEOF'
import json, os, statistics, subprocess

import torch
import torchvision

out = os.environ["OUT"]
ran, stopped = set(os.environ["RAN"].split()), set(os.environ["STOPPED"].split())


def not_done(number):
    """Why part ``number`` has no result of this check ("not run", "stopped at its time limit"), or
    None: an earlier check's files in $OUT are not this one's."""
    return "not run" if number not in ran else "stopped at its time limit" if number in stopped else None


print("\n================ GPU check summary ================")
try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
except OSError:
    smi = ""
print(f"GPU: {smi or (torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none (a check run on the CPU)')}")
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), "
      f"torchvision {torchvision.__version__}")
def last_line(name, number):
    if not_done(number):
        return not_done(number)
    try:
        lines = open(os.path.join(out, name)).read().strip().splitlines()
    except OSError:
        return "not run"
    return lines[-1] if lines else "no output"


print(f"CUDA tests: {last_line('cuda_tests.log', '1')}")
print(f"the suite on the CPU (GPU hidden): {last_line('cpu_suite.log', '4')}")
try:
    if not_done("2"):
        raise ValueError(not_done("2"))
    bench = json.load(open(os.path.join(out, "bench", "bench.json")))["results"]
    n_eval = int(os.environ["EVAL_IMAGES"])
    print(f"Tutorial training step, 800/1333 px, batch 2 (median) | evaluation ({n_eval} images, 800 px):")
    for c in [c for c in ("reference", "ours", "ours_bf16", "ours_amp") if c in bench["step"]]:
        step = statistics.median(r["seconds"] for r in bench["step"][c]["runs"])
        ev = statistics.median(r["seconds"] for r in bench["eval"][c]["runs"]) / n_eval
        mem = max(bench[p][c]["memory"].get("cuda_max_allocated_mib", 0) for p in ("step", "eval"))
        busy = (bench["step"][c].get("profile") or {})
        busy = f"GPU busy {100 * busy['busy_seconds'] / busy['wall_seconds']:3.0f}%" if busy.get("wall_seconds") else ""
        print(f"  {c:9s} {step:6.3f} s/it ({2 / step:5.1f} images/s) | {ev:6.3f} s/img ({1 / ev:5.1f} images/s) | "
              f"peak GPU memory {mem:6.0f} MiB {busy}")
    print("  (the tutorial's published figure: 0.205-0.226 s/it on an A10G; the goal: <= 0.08 s/it with --amp)")
    prof = bench["step"].get("ours_bf16", {}).get("profile")
    if prof:
        print(f"Profile of one training step (ours, bfloat16): {prof['wall_seconds']:.3f} s wall, GPU busy "
              f"{prof['busy_seconds']:.3f} s ({100 * prof['busy_seconds'] / prof['wall_seconds']:.0f}%)")
        print("\n".join(prof["table"].splitlines()[:14]))
except (OSError, KeyError, ValueError) as e:
    print(f"benchmark: no result ({e}); see {out}/bench.log")
try:
    if not_done("3"):
        raise ValueError(not_done("3"))
    last = json.load(open(os.path.join(out, "demo", "metrics.json")))[-1]
    print(f"--demo on the GPU: {int(os.environ['DEMO_MS']) / 1000:.0f} s wall (data generation included), "
          f"bbox AP {last['bbox']['AP']:.3f}, segm AP {last['segm']['AP']:.3f}")
except (OSError, KeyError, ValueError, IndexError) as e:
    print(f"--demo: no result ({e}); see {out}/demo.log")
for name, title, number in (("count_ops.log", "Host syncs and ops (CPU counter)", "5"),
                            ("cli_timing", "Whole command line", "6")):
    if not_done(number):
        if number in ran:
            print(f"{title}: {not_done(number)}")
        continue
    try:
        text = open(os.path.join(out, name) if name.endswith(".log") else os.path.join(out, name, "report.txt")).read()
        print(f"{title}:\n{text.strip()}")
    except OSError:
        pass
print(f"whole check: {os.environ['TOTAL_SECONDS']} s (BUDGET={os.environ['BUDGET']})")
if os.environ["SKIPPED"].strip():
    print(f"parts skipped for lack of time: {os.environ['SKIPPED'].strip()} (run them with PARTS=...)")
PYEOF
