"""benchmarks/bench.py end to end, at a tiny size: every phase runs for both configurations, and
the report carries what the benchmark promises (times, ratios, memory, FLOPs, equal results)."""

import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_tiny_run_reports_every_phase_for_both_configurations(tmp_path):
    out = tmp_path / "bench"
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "bench.py"), "--device", "cpu",
           "--data-path", str(tmp_path / "data"), "--num-images", "6", "--out", str(out),
           "--min-size", "128", "--max-size", "213", "--warmup", "0", "--steps", "1",
           "--eval-images", "2", "--eval-repeats", "1",
           "--epoch-train", "2", "--epoch-test", "1", "--epoch-min-size", "128", "--epoch-max-size", "213",
           "--epoch-repeats", "1"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    report = json.loads((out / "bench.json").read_text())
    results = report["results"]
    assert set(results) == {"step", "eval", "epoch"}
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
    text = (out / "bench.txt").read_text()
    for expected in ("ref/ours", "(a) train step", "(b) eval pass", "(c) epoch", "Peak RSS", "GFLOP/s", "COCO AP"):
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
