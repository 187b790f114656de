"""benchmarks/bench.py and the bench_* modules beside it: their helpers, and the whole benchmark end to end at a tiny
size: every phase runs for both configurations, and the report carries what the benchmark promises (times, ratios,
memory, FLOPs, equal results)."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT_DIR as ROOT
from conftest import TINY
from pycocotools import mask as coco_mask

# the bench_* modules import each other by name, as bench.py (a script, its folder on sys.path) does
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import bench  # noqa: E402
import bench_report  # noqa: E402
import bench_workers  # noqa: E402
from conftest import make_data

THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def as_rle(rle):
    return dict(rle, counts=rle["counts"].encode("ascii"))


@pytest.mark.slow  # ~1 min: five processes, every phase (pytest.ini)
def test_bench_tiny_run_reports_every_phase_for_both_configurations(tmp_path):
    out = tmp_path / "bench"
    # the least that exercises every phase: one batch, one test image, no warm-up, one worker per
    # configuration, and the tests' small RPN/RoI counts (the same code runs, on fewer boxes)
    roi_counts = {k: v for k, v in TINY.items() if not k.endswith("_size")}
    # the paths relative to the folder it is run from, not the repository's root where the workers start
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "bench.py"), "--device", "cpu",
           "--data-path", "data", "--num-images", "3", "--out", "bench",
           "--min-size", "128", "--max-size", "213", "--warmup", "0", "--steps", "1",
           "--eval-images", "1", "--eval-repeats", "1", "--model-kwargs", json.dumps(roi_counts),
           "--epoch-train", "2", "--epoch-test", "1", "--epoch-min-size", "128", "--epoch-max-size", "213",
           "--epoch-repeats", "1", "--photo-size", "400", "300", "--photo-repeats", "1", "--demo-steps", "1",
           "--demo-data-path", "demo_data", "--reuse-workers"]
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    report = json.loads((out / "bench.json").read_text())
    results = report["results"]
    assert set(results) == {"step", "eval", "epoch", "photo", "demo"}
    # each worker reports the wait policy its OpenMP runtime started with: the stock default for both
    # (the reference drops the variable; ours keeps the parent's, here none)
    for config in ("reference", "ours"):
        assert results["step"][config]["setup"]["omp_wait_policy"] == "(unset: runtime default)"
    for phase in ("step", "eval", "epoch"):
        for config in ("reference", "ours"):
            runs = results[phase][config]["runs"]
            assert runs and all(r["seconds"] > 0 for r in runs), (phase, config)
            assert results[phase][config]["memory"]["peak_rss_mib"] > 100
    # (a): the same batches for both, a FLOP count, page faults counted
    assert results["step"]["reference"]["runs"][0]["shapes"] == results["step"]["ours"]["runs"][0]["shapes"]
    assert results["step"]["flops"][0] > 1e9
    assert all(r["minor_page_faults"] > 0 for r in results["step"]["ours"]["runs"])
    # (b): the same detections from the same weights
    assert results["eval"]["agreement"]["ours"]["bbox"] == pytest.approx(1.0, abs=1e-3)
    # (c): the same first loss from the same weights and data
    ref_loss, our_loss = (results["epoch"][c]["runs"][0]["losses"][0] for c in ("reference", "ours"))
    assert our_loss == pytest.approx(ref_loss, rel=1e-3)
    # (f): the demo's step on the same batches from the same weights: the same first loss; the
    # convolutions' time and FLOPs counted
    (ref_run,), (our_run,) = results["demo"]["reference"]["runs"], results["demo"]["ours"]["runs"]
    assert our_run["loss"] == pytest.approx(ref_run["loss"], rel=1e-3)
    for config in ("reference", "ours"):
        convs = results["demo"][config]["convs"]
        assert 0 < convs["conv_seconds"] < convs["wall_seconds"] and 0 < convs["conv_flops"] < convs["total_flops"]
    # (e): both predicted the photo's 100 detections, each in a process of its own
    for config in ("reference", "ours"):
        (run,) = results["photo"][config]["runs"]
        assert run["detections"] == 100 and run["seconds"] > 0 and run["peak_rss_mib"] > 100
    ours_json = json.loads((out / "photo_ours" / "photo_400x300.jpg.json").read_text())
    reference_json = json.loads((out / "photo_reference" / "reference.json").read_text())
    # the same masks up to float rounding (RoI pooling sums in another order): a pixel or two at an edge
    ious = [coco_mask.iou([as_rle(a["mask_rle"])], [as_rle(b["mask_rle"])], [0])[0][0]
            for a, b in zip(ours_json["detections"], reference_json["detections"], strict=True)]
    assert min(ious) > 0.999, ious
    text = (out / "bench.txt").read_text()
    for expected in ("ref/ours", "(a) train step", "(b) eval pass", "(c) epoch", "of which training",
                     "of which evaluation", "Peak RSS", "GFLOP/s", "COCO AP",
                     "(e) --predict, one 400x300 photo, 100 detections", "(f) the demo's training step",
                     "Mask R-CNN settings of (a)-(d): " + json.dumps(roi_counts)):
        assert expected in text


def test_bench_asking_for_cuda_without_a_gpu_says_so(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    run = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench.py"), "--device", "cuda",
                          "--out", str(tmp_path / "bench"), "--data-path", str(tmp_path / "data")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "--device cuda" in run.stderr and "--device cpu" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "data").exists()  # stopped before generating anything


# ----- the benchmark's own helpers ----------------------------------------------------------

def test_bench_interleaves_and_agreement_is_one_for_identical_detections():
    assert [order for _, order in bench_workers.interleaved(["a", "b"], 3)] == [["a", "b"], ["b", "a"], ["a", "b"]]
    masks = np.zeros((2, 20, 30), np.uint8)
    masks[0, 2:10, 3:12] = 1
    masks[1, 5:18, 15:28] = 1
    rles = coco_mask.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    det = dict(image_id=7, boxes=[[3.0, 2.0, 12.0, 10.0], [15.0, 5.0, 28.0, 18.0]], scores=[0.9, 0.8], labels=[1, 1],
               masks=[dict(size=list(r["size"]), counts=r["counts"].decode("ascii")) for r in rles], size=[20, 30])
    assert bench_report.agreement([det], [det]) == {"bbox": pytest.approx(1.0), "segm": pytest.approx(1.0)}
    moved = dict(det, boxes=[[13.0, 2.0, 22.0, 10.0], [0.0, 0.0, 5.0, 5.0]], masks=det["masks"][::-1])
    assert bench_report.agreement([det], [moved])["bbox"] < 0.5


def test_bench_compile_summary_counts_the_steps_that_win_the_compile_time_back():
    def runs(seconds):
        return dict(runs=[dict(seconds=s, loss=1.0) for s in seconds])

    eager = runs([7.0] * 6)
    # 60 s of compilation spread over the first two steps, then 1 s/step faster: pays after 6 + (77 - 42) / 1 steps
    summary = bench_report.compile_summary(dict(eager=eager, compiled=runs([40.0, 27.0, 6.0, 6.0, 6.0, 6.0])))
    assert summary["saving_per_step"] == pytest.approx(1.0)
    assert summary["overhead"] == pytest.approx(91.0 - 42.0)
    assert summary["break_even_steps"] == pytest.approx(6 + 49.0)
    assert summary["pays"] and summary["tutorial_steps"] == 120
    assert not bench_report.compile_summary(dict(eager=eager, compiled=runs([40.0] + [6.9] * 5)),
                                            tutorial_steps=100)["pays"]
    never = bench_report.compile_summary(dict(eager=eager, compiled=runs([40.0] + [7.5] * 5)))
    assert never["break_even_steps"] == float("inf") and not never["pays"]


def test_bench_keep_freed_memory_serves_big_blocks_from_the_heap():
    # glibc's default: a 64 MiB block is a fresh mmap far above the heap's end (sbrk(0)); after
    # keep_freed_memory it comes from the heap, below its end, where freed pages stay resident.
    # (glibc's own malloc, as PyTorch's CPU allocator calls it; no torch import: a second each)
    code = ("import ctypes, sys\n"
            "sys.path.insert(0, 'benchmarks')\n"
            "import bench_workers\n"
            "if sys.argv[1] == 'keep':\n    bench_workers.keep_freed_memory()\n"
            "libc = ctypes.CDLL('libc.so.6'); libc.sbrk.restype = libc.malloc.restype = ctypes.c_void_p\n"
            "p = libc.malloc(64 << 20)\n"
            "print(p < libc.sbrk(0))")
    below_heap_end = {}
    for mode in ("stock", "keep"):
        out = subprocess.run([sys.executable, "-c", code, mode], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        below_heap_end[mode] = out.stdout.strip()
    assert below_heap_end == {"stock": "False", "keep": "True"}


@pytest.mark.skipif("[never]" in (open(THP).read() if os.path.exists(THP) else "[never]"),
                    reason="the kernel has transparent huge pages off")
def test_bench_ours_thp_backs_big_blocks_with_huge_pages():
    # A 64 MiB block, written once: with the ours_thp worker's environment glibc asks the kernel for
    # transparent huge pages (AnonHugePages in smaps), without it (THP mode "madvise") none.
    code = ("import ctypes\n"
            "libc = ctypes.CDLL('libc.so.6'); libc.malloc.restype = ctypes.c_void_p\n"
            "size = 64 << 20; p = libc.malloc(size); ctypes.memset(p, 1, size)\n"
            "rollup = open('/proc/self/smaps_rollup').read().split('AnonHugePages:')[1]\n"
            "print(int(rollup.split()[0]) // 1024)")
    huge_mib = {}
    for config in ("ours", "ours_thp"):
        env = bench_workers.worker_env(config)
        if config == "ours":
            env.pop("GLIBC_TUNABLES", None)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 0, out.stderr
        huge_mib[config] = int(out.stdout)
    assert huge_mib["ours_thp"] >= 32
    if "[madvise]" in open(THP).read():
        assert huge_mib["ours"] == 0


def test_bench_paired_ratio_pairs_repeats_batch_by_batch():
    # batches of different cost: the ratio of medians divides batch 3's time by batch 1's
    reference = [dict(seconds=30.0), dict(seconds=12.0), dict(seconds=20.0)]
    ours = [dict(seconds=16.0), dict(seconds=10.0), dict(seconds=20.0)]
    assert bench_report.paired_ratio(reference, ours) == pytest.approx(1.2)  # median of 1.875, 1.2, 1.0
    assert bench_report.median_seconds(reference) / bench_report.median_seconds(ours) == pytest.approx(20.0 / 16.0)


def test_ctrl_c_reports_the_finished_phases_and_stops_in_one_line(tmp_path, monkeypatch, capsys):
    def pressed(*args, **kwargs):
        raise KeyboardInterrupt

    def photo_done_then_pressed(phases, configs, args, spec_path, results):
        run = dict(seconds=1.0, peak_rss_mib=900.0, detections=100)
        results["photo"] = dict(reference=dict(runs=[dict(run, seconds=3.0)]), ours=dict(runs=[run]), size=[400, 300])
        raise KeyboardInterrupt  # pressed during the next phase

    def main(phases, out):
        try:
            bench.main(["--device", "cpu", "--phases", phases, "--out", str(out)])
        except SystemExit as stop:
            return stop.code, capsys.readouterr()
        except KeyboardInterrupt:  # (caught, or it would end the whole pytest session)
            pytest.fail("the press escaped as a KeyboardInterrupt")
        pytest.fail("the benchmark did not stop")

    previous = signal.getsignal(signal.SIGINT)
    try:
        monkeypatch.setattr(bench, "prepare", pressed)
        code, printed = main("demo", tmp_path / "a")
        assert code == 130 and printed.err.strip() == ("Ctrl-C: stopped while preparing the data and the initial "
                                                       "weights; nothing was measured")
        monkeypatch.setattr(bench, "prepare", lambda args, out_dir: ([0], [1], "initial_weights.pth"))
        monkeypatch.setattr(bench, "run_phases", pressed)
        code, printed = main("demo", tmp_path / "b")
        assert code == 130 and "stopped in phase demo, before any phase finished; nothing was written" in printed.err
        assert not (tmp_path / "b" / "bench.json").exists()
        monkeypatch.setattr(bench, "run_phases", photo_done_then_pressed)
        code, printed = main("photo,demo", tmp_path / "c")
        assert code == 130 and printed.err.strip() == ("Ctrl-C: stopped in phase demo; the phases that finished "
                                                       "are reported above")
        assert "(e) --predict, one 400x300 photo" in printed.out and "3.00x faster" in printed.out
        assert set(json.loads((tmp_path / "c" / "bench.json").read_text())["results"]) == {"photo"}
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_earlier_run_is_kept_not_replaced(tmp_path):
    out = tmp_path / "bench"
    (out / "photo_ours").mkdir(parents=True)
    for name in ("bench.json", "bench.txt", "step_ours.log", "photo_ours/photo.json", "initial_weights.pth"):
        (out / name).write_text(name)
    when = os.path.getmtime(out / "bench.json")
    earlier = bench_report.keep_earlier_run(str(out))
    assert sorted(os.listdir(out)) == ["earlier", "initial_weights.pth"]  # the weights are rebuilt every run
    assert sorted(os.listdir(earlier)) == ["bench.json", "bench.txt", "photo_ours", "step_ours.log"]
    assert open(os.path.join(earlier, "photo_ours", "photo.json")).read() == "photo_ours/photo.json"
    # a run that failed or was stopped before reporting: its logs are kept too, beside the first
    # (here from the same second)
    (out / "eval_reference.log").write_text("Traceback ...")
    os.utime(out / "eval_reference.log", (when, when))
    second = bench_report.keep_earlier_run(str(out))
    assert second == earlier + "-2" and os.listdir(second) == ["eval_reference.log"]
    assert bench_report.keep_earlier_run(str(out)) is None  # nothing left to keep


def test_tutorial_reference_refuses_a_foreign_weights_file(tmp_path):
    # its whole run is tested through benchmarks/cli_timing.py (tests/test_cli_timing.py)

    data = make_data(tmp_path / "PennFudanPed", num_images=5)
    script = os.path.join(ROOT, "benchmarks", "tutorial_reference.py")
    common = ["--data-path", data, "--epochs", "1", "--test-size", "1", "--min-size", "64", "--max-size", "96"]

    bad = tmp_path / "other.pth"
    torch.save({"backbone.body.conv1.weight": torch.zeros(1)}, bad)
    proc = subprocess.run([sys.executable, script, *common, "--weights", str(bad)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"error: {bad} is not a state dict of the tutorial's Mask R-CNN")
