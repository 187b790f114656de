"""benchmarks/cli_timing.py: the tutorial's whole run from the command line, the reference against tv_training.py, with
the figures read from each run's own log (here one epoch on five tiny images), and its refusals of bad values."""

import json
import os
import re
import sys

import pytest
from conftest import ROOT_DIR as ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import cli_timing  # noqa: E402

TOY = ["--num-images", "5", "--test-size", "2", "--epochs", "1", "--min-size", "64", "--max-size", "96"]


@pytest.mark.slow  # two processes of the tutorial's ResNet-50 model at 64 px
def test_the_reference_and_ours_run_on_the_same_data_and_weights_and_are_read_from_their_logs(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(tmp_path)  # --out relative to a folder other than the repository's root, where the runs start
    out = tmp_path / "timing"
    result = cli_timing.main(["--configs", "reference", "fp32", *TOY, "--out", "timing"])

    ref, ours = result["runs"]
    assert (ref["name"], ref["returncode"], ours["name"], ours["returncode"]) == ("reference", 0, "fp32", 0)
    # both got the data and weights the setup made, and the same flags
    assert (out / "data" / "PennFudanPed" / "PNGImages").is_dir() and (out / "layout.pth").is_file()
    assert ref["command"].startswith("python benchmarks/tutorial_reference.py --data-path ")
    assert ours["command"].startswith("python tv_training.py " + " ".join(result["setup"]["common"]) + " --no-amp")
    ref_log = (out / "reference.log").read_text()
    # the tutorial's loop, 3 images
    assert "Epoch: [0]  [0/2]" in ref_log and "That's it! The whole run took" in ref_log
    # one epoch: one step time, one evaluation time, one mean loss each, all read from the log
    assert len(ref["step_seconds"]) == len(ours["step_seconds"]) == len(ref["eval_seconds_per_image"]) == 1
    # ours' parsed figures are its own metrics.json's
    records = json.loads((out / "fp32" / "metrics.json").read_text())
    assert ours["epoch_losses"] == [pytest.approx(records[-1]["train"]["loss"], abs=1e-4)]
    assert ours["bbox_AP"] == pytest.approx(records[-1]["bbox"]["AP"], abs=5e-4)
    assert ours["segm_AP"] == pytest.approx(records[-1]["segm"]["AP"], abs=5e-4)
    assert ref["bbox_AP"] is not None and ref["segm_AP"] is not None
    # the ratios are the reference's over ours
    assert ours["wall_ratio"] == pytest.approx(ref["wall_seconds"] / ours["wall_seconds"], rel=1e-2)
    assert ours["step_ratio"] == [pytest.approx(ref["step_seconds"][0] / ours["step_seconds"][0], rel=1e-2)]
    assert "wall_ratio" not in ref and "loss_vs_fp32_percent" in ref

    text = (out / "report.txt").read_text()
    assert text.startswith("Machine: ") and "bf16 flags:" in text and "device cpu" in text
    assert "Setup: 5 synthetic Penn-Fudan-sized images (seed 0); the pretrained layout with random values" in text
    assert f"fp32: wall {cli_timing._minutes(ours['wall_seconds'])} ({ours['wall_ratio']:.2f}x)" in text
    assert json.loads((out / "results.json").read_text())["runs"] == result["runs"]

    # the same command again keeps the measurement
    with pytest.raises(SystemExit, match="earlier measurement; pass --overwrite"):
        cli_timing.main(["--configs", "fp32", *TOY, "--out", str(out)])
    assert (out / "results.json").exists() and (out / "reference.log").exists()


def test_a_log_gives_each_epochs_step_and_eval_times_mean_loss_and_the_last_ap(tmp_path):
    def coco(bbox, segm):
        return [f"IoU metric: {kind}\n Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = {ap}\n"
                f" Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ] = 0.999\n"
                for kind, ap in (("bbox", bbox), ("segm", segm))]

    lines = ["Epoch: [0]  [ 0/60]  eta: 0:10:00  lr: 0.000100  loss: 9.1000 (9.1000)  loss_mask: 1.0 (1.0)  time: 10\n",
             "Epoch: [0]  [59/60]  eta: 0:00:00  lr: 0.000100  loss: 2.0000 (8.9620)  loss_mask: 1.0 (1.0)  time: 10\n",
             "Epoch: [0] Total time: 0:10:56 (10.9400 s / it)\n",
             "Test:  [ 0/50]  eta: 0:01:00  model_time: 2.0 (2.0)  evaluator_time: 0.1 (0.1)  time: 2.1\n",
             "Test: Total time: 0:01:43 (2.0700 s / it)\n", *coco("0.001", "0.000"),
             "Epoch: [1]  [59/60]  eta: 0:00:00  lr: 0.000100  loss: 1.1000 (1.2930)  max mem: 3000\n",
             "Epoch: [1] Total time: 0:11:34 (11.5700 s / it)\n",
             "Test:  Total time: 0:01:31 (1.8300 s / it)\n", *coco("0.003", "0.002")]
    log = tmp_path / "run.log"
    log.write_text("".join(lines))
    assert cli_timing.parse_log(log) == dict(step_seconds=[10.94, 11.57], eval_seconds_per_image=[2.07, 1.83],
                                             epoch_losses=[8.962, 1.293], bbox_AP=0.003, segm_AP=0.002)


def test_ratios_are_the_references_time_over_each_runs_and_losses_compare_with_fp32():
    def row(name, wall, steps, evals, losses, returncode=0):
        return dict(name=name, wall_seconds=wall, step_seconds=steps, eval_seconds_per_image=evals,
                    epoch_losses=losses, returncode=returncode)

    rows = cli_timing.add_ratios([row("reference", 2581.0, [17.24, 17.91], [4.83, 4.5], [9.0, 1.316]),
                                  row("fp32", 1568.0, [10.94, 11.57], [2.07, 1.83], [8.96, 1.293]),
                                  row("amp", 700.0, [3.92, 4.05], [2.12, 1.9], [8.59, 1.289]),
                                  row("amp_eval", 5.0, [], [], [], returncode=1)])
    ref, fp32, amp, failed = rows
    assert "wall_ratio" not in ref and "loss_vs_fp32_percent" not in fp32
    assert (fp32["wall_ratio"], fp32["step_ratio"], fp32["eval_ratio"]) == (1.646, [1.576, 1.548], [2.333, 2.459])
    assert (amp["wall_ratio"], amp["step_ratio"]) == (3.687, [4.398, 4.422])
    assert amp["loss_vs_fp32_percent"] == -0.31 and ref["loss_vs_fp32_percent"] == 1.78
    assert "wall_ratio" not in failed


def test_amp_runs_by_default_where_it_pays():
    assert cli_timing.default_configs(on_cuda=False, has_bf16=True) == ["reference", "fp32", "amp", "amp_eval"]
    assert cli_timing.default_configs(on_cuda=False, has_bf16=False) == ["reference", "fp32"]
    assert cli_timing.default_configs(on_cuda=True, has_bf16=True) == ["reference", "fp32", "amp"]


@pytest.mark.parametrize("flags, message", [
    (["--configs", "fp32", "fp32"], "--configs: fp32 fp32 names a configuration twice"),
    (["--epochs", "0"], "--epochs and --test-size must be at least 1"),
    (["--lr", "-1"], "--lr above 0"),
    (["--min-size", "900", "--max-size", "800"], "give 32 <= --min-size <= --max-size"),
    (["--num-images", "10", "--test-size", "9"], "--num-images 10: give at least --test-size \\+ 2 \\(11\\)"),
    (["--data-path", "nowhere"], "--data-path nowhere: holds no PNGImages/ folder"),
    (["--weights", "missing.pth"], "--weights missing.pth: no such file"),
])
def test_bad_values_stop_in_one_line_before_anything_is_written(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        cli_timing.main([*flags, "--out", str(tmp_path / "t")])
    assert e.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and re.search(message, line)
    assert not (tmp_path / "t").exists()


def test_a_folder_with_other_files_is_left_alone(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match=r"files this script did not write \(notes.txt\)"):
        cli_timing.main(["--overwrite", "--out", str(mine)])
    assert os.listdir(mine) == ["notes.txt"]


def test_ctrl_c_in_the_setup_keeps_nothing_and_in_a_run_reports_the_finished_ones(tmp_path, monkeypatch, capsys):
    out = tmp_path / "timing"

    def interrupted_setup(args):  # as make_synthetic_pennfudan and atomic_save leave it: whole files only
        (out / "data" / "PennFudanPed").mkdir(parents=True)
        (out / "layout.pth").write_bytes(b"weights")
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_timing, "prepare", interrupted_setup)
    with pytest.raises(SystemExit) as e:
        cli_timing.main(["--configs", "reference", "fp32", "--out", str(out)])
    assert e.value.code == 130 and "stopped before the first run" in capsys.readouterr().err
    assert os.listdir(out) == []  # the same command can run again without --overwrite

    monkeypatch.setattr(cli_timing, "prepare", lambda args: dict(describe="given", common=["--epochs", "1"]))
    finished = dict(name="reference", returncode=0, wall_seconds=10.0, peak_rss_mib=100, step_seconds=[2.0],
                    eval_seconds_per_image=[1.0], epoch_losses=[1.5], bbox_AP=0.1, segm_AP=0.2, log="reference.log")

    def run_config(name, common, out_dir):
        if name == "fp32":
            raise KeyboardInterrupt  # the run got the same Ctrl-C and stopped
        return dict(finished)

    monkeypatch.setattr(cli_timing, "run_config", run_config)
    with pytest.raises(SystemExit) as e:
        cli_timing.main(["--configs", "reference", "fp32", "amp", "--out", str(out)])
    assert e.value.code == 130 and "stopped after 1 finished run(s)" in capsys.readouterr().err
    assert [r["name"] for r in json.loads((out / "results.json").read_text())["runs"]] == ["reference"]
    assert "reference: wall 0:10.0, peak RSS 100 MiB" in (out / "report.txt").read_text()
