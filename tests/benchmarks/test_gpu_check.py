"""benchmarks/gpu_check.sh's plumbing on the CPU: the time budget skips and names a part that would
start with too little time left, and the summary reports only the parts of this check."""

import os
import re
import subprocess
import sys

from conftest import ROOT_DIR as ROOT


def gpu_check(tmp_path, **env):
    env = {**os.environ, "DEVICE": "cpu", "QUICK": "1", "PYTHON": sys.executable,
           "OUT_DIR": str(tmp_path / "gpu_check"), **env}
    run = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh")], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return run.stdout


def test_a_part_without_the_time_left_is_skipped_and_named(tmp_path):
    (tmp_path / "gpu_check").mkdir()
    (tmp_path / "gpu_check" / "cuda_tests.log").write_text("99 passed in 1.00s\n")  # an earlier check's
    out = gpu_check(tmp_path, PARTS="1,3", BUDGET="10")
    assert re.search(r"== part 1 skipped: (9|10) s left of BUDGET=10\n", out) and "== part 3 skipped" in out
    assert "parts skipped for lack of time: 1 3 (run them with PARTS=...)" in out
    assert "CUDA tests: not run" in out and "99 passed" not in out
    assert "--demo: no result (not run)" in out and "whole check: " in out
