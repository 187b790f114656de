"""benchmarks/demo_timing.py: fresh --demo runs seed by seed, their wall time and final scores, and the
means the demo tables of docs/demo.md is made of (here a tiny one-epoch demo on tiny images)."""

import json
import os

import pytest
import torch
from conftest import make_data

from benchmarks import demo_timing

TINY_DEMO = ["--epochs", "1", "--min-size", "64", "--max-size", "96", "--test-size", "2", "-j", "0"]


def test_a_run_is_timed_and_scored_from_its_own_output(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = make_data(tmp_path / "data", num_images=6)
    out = tmp_path / "timing"
    monkeypatch.chdir(tmp_path)  # relative paths from a folder other than the repository's root, where runs start
    result = demo_timing.main(["--seeds", "1", "--precisions", "fp32", "--data-path", "data",
                               "--out", "timing", "--", *TINY_DEMO])

    (row,) = result["runs"]
    assert (row["name"], row["returncode"], row["trained_in"]) == ("fp32_seed1", 0, "fp32")
    assert row["wall_seconds"] > 0 and row["peak_rss_mib"] > 100 and not row["generated_data"]
    # the row's scores are the run's own final epoch, from its own output folder
    with open(out / "fp32_seed1" / "metrics.json") as f:
        records = json.load(f)
    assert row["epochs"] == len(records) == 1  # the flags after -- reached tv_training.py
    assert (row["bbox_AP"], row["segm_AP50"]) == (records[-1]["bbox"]["AP"], records[-1]["segm"]["AP50"])
    # --demo, the seed and fp32 (--no-amp) reached it too
    run_args = torch.load(out / "fp32_seed1" / "checkpoint.pth", weights_only=True)["args"]
    assert (run_args["demo"], run_args["seed"], run_args["amp"]) == (True, 1, False)
    assert "Demo: data in" in (out / "fp32_seed1.log").read_text()

    text = (out / "report.txt").read_text()
    assert text.startswith("Machine: ") and "cores; bf16 flags:" in text
    assert "fp32_seed1 (fp32)" in text and "mean of 1 seed(s), fp32 (fp32): bbox AP" in text
    assert "Wall-time target" in text
    assert json.loads((out / "results.json").read_text())["runs"] == [row]

    # the same command again keeps the measurement
    with pytest.raises(SystemExit, match="earlier measurement; pass --overwrite"):
        demo_timing.main(["--seeds", "0", "--data-path", str(data), "--out", str(out)])
    assert (out / "results.json").exists()


def test_means_are_per_setting_over_the_finished_seeds():
    def row(precision, seed, bbox, segm, returncode=0, threads=None):
        return dict(precision=precision, seed=seed, threads=threads, returncode=returncode, trained_in="bf16",
                    wall_seconds=100.0 + seed, bbox_AP=bbox, segm_AP=segm)

    rows = [row("auto", 0, 0.5, 0.4), row("auto", 1, 0.6, 0.5), row("auto", 2, 0.0, 0.0, returncode=1),
            row("auto", 0, 0.1, 0.1, threads=1)]
    first, single_thread = demo_timing.summarize(rows)
    assert (first["runs"], first["threads"], first["wall_seconds"]) == (2, None, 100.5)
    assert (first["bbox_AP"], first["segm_AP"]) == (pytest.approx(0.55), pytest.approx(0.45))
    assert (single_thread["runs"], single_thread["threads"], single_thread["bbox_AP"]) == (1, 1, 0.1)


def test_bad_values_and_foreign_folders_stop_in_one_line(tmp_path):
    with pytest.raises(SystemExit, match="--threads: each value must be 1 or more"):
        demo_timing.main(["--threads", "0", "--out", str(tmp_path / "t")])
    with pytest.raises(SystemExit, match="--seeds: 0 1 0 names a value twice"):
        demo_timing.main(["--seeds", "0", "1", "0", "--out", str(tmp_path / "t")])
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit, match="is a file; give a folder"):
        demo_timing.main(["--out", str(tmp_path / "file")])
    assert not (tmp_path / "t").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match=r"files this script did not write \(notes.txt\)"):
        demo_timing.main(["--overwrite", "--out", str(mine)])
    assert (mine / "notes.txt").read_text() == "keep me"
    # a measurement's own files are what --overwrite removes
    old = tmp_path / "old"
    (old / "auto_seed0").mkdir(parents=True)
    (old / "results.json").write_text("{}")
    with pytest.raises(SystemExit, match="earlier measurement"):
        demo_timing.main(["--out", str(old)])
    assert os.listdir(old)


def test_a_failed_run_stops_the_measurement_with_its_message(tmp_path):
    out = tmp_path / "timing"
    with pytest.raises(SystemExit, match="auto_seed0 failed .*\n(.*\n)*.*unrecognized arguments: --epocs"):
        demo_timing.main(["--seeds", "0", "1", "--data-path", str(tmp_path / "data"), "--out", str(out),
                          "--", "--epocs", "1"])
    assert sorted(os.listdir(out)) == ["auto_seed0.log", "report.txt", "results.json"]  # seed 1 never started
    assert "failed with exit status 2" in (out / "report.txt").read_text()
