"""--tensorboard end to end: a tiny run's event files read back (each iteration's losses and lr, each
epoch's COCO numbers and per-class AP, the prediction figures), a resumed run appending to them,
and the one line when the tensorboard package is missing."""

import glob
import os
import sys

import pytest
from conftest import LOSS_TERMS, run_main, tiny_argv
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_arguments import cli

from finetune.outputs import tensorboard
from finetune.outputs.metrics import COCO_STAT_NAMES

RECIPE = dict(weights="none", lr="3e-4")


def read_events(output_dir):
    """Every scalar tag's (step, value) pairs and the image tags of ``output_dir/tensorboard``."""
    events = EventAccumulator(os.path.join(output_dir, "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    return scalars, {tag: events.Images(tag) for tag in events.Tags()["images"]}


def check_events(scalars, images, result, epochs, figure_steps=None):
    """``figure_steps``: the epochs the prediction figures were drawn after (default: the last)."""
    records = result["records"]
    per_epoch = len(records[0]["iteration_losses"])
    losses = [x for r in records for x in r["iteration_losses"]]
    assert per_epoch >= 2 and len(losses) == per_epoch * epochs
    # each iteration: every loss term and the lr, at steps 0, 1, ... across the epochs
    for term in LOSS_TERMS | {"lr"}:
        assert [s for s, _ in scalars[f"train/{term}"]] == list(range(len(losses))), term
    assert [v for _, v in scalars["train/loss"]] == pytest.approx(losses, rel=1e-6)
    assert scalars["train/lr"][-1][1] == pytest.approx(records[-1]["lr"], rel=1e-6)  # lr is logged after its step
    # each epoch: the twelve COCO numbers of both IoU types, and the per-class AP, as main returned them
    for iou in ("bbox", "segm"):
        for name in COCO_STAT_NAMES:
            expected = [(r["epoch"], pytest.approx(r[iou][name], abs=1e-6)) for r in records]
            assert scalars[f"{iou}/{name}"] == expected, (iou, name)
    for cls, row in result["per_class"].items():
        for key, value in row.items():
            tag = f"per_class_AP/{key}/{cls}"
            assert tag in scalars if value != -1 else tag not in scalars
            if value != -1:
                assert scalars[tag][-1] == (epochs - 1, pytest.approx(value, abs=1e-6))
    names = sorted(os.listdir(os.path.join(result["output_dir"], "predictions")))
    assert names and sorted(images) == [f"predictions/{n}" for n in names]
    steps = figure_steps or [epochs - 1]
    assert all([e.step for e in events] == steps and events[-1].width > 0 for events in images.values())


@pytest.fixture(scope="module")
def board_run(data, tmp_path_factory, one_thread):
    out = str(tmp_path_factory.mktemp("board"))
    result = run_main(*tiny_argv(data, out, "--tensorboard", epochs=2, **RECIPE), quiet=True)
    return dict(result, output_dir=out)


def test_tensorboard_holds_the_runs_numbers_and_figures(board_run):
    scalars, images = read_events(board_run["output_dir"])
    check_events(scalars, images, board_run, epochs=2)


def test_a_resumed_run_appends_and_a_new_one_starts_afresh(board_run, data, tmp_path, one_thread):
    """1 epoch, then resumed for a 2nd: the same steps, each once, as the uninterrupted run; then
    --overwrite in the same folder leaves only the new run's events."""
    out = str(tmp_path / "run")
    run_main(*tiny_argv(data, out, "--tensorboard", epochs=1, **RECIPE), quiet=True)
    result = run_main(*tiny_argv(data, out, "--resume", os.path.join(out, "checkpoint.pth"), epochs=2, **RECIPE),
                      quiet=True)  # --tensorboard from the checkpoint
    scalars, images = read_events(out)
    check_events(scalars, images, dict(result, output_dir=out), epochs=2, figure_steps=[0, 1])  # each run's end
    uninterrupted = read_events(board_run["output_dir"])[0]["train/loss"]
    assert [s for s, _ in scalars["train/loss"]] == [s for s, _ in uninterrupted]
    result = run_main(*tiny_argv(data, out, "--tensorboard", "--overwrite", epochs=1, **RECIPE), quiet=True)
    scalars, images = read_events(out)
    check_events(scalars, images, dict(result, output_dir=out), epochs=1)
    # replaced by a run without --tensorboard: no event file of the replaced run is left to be shown as this one's
    run_main(*tiny_argv(data, out, "--overwrite", epochs=1, **RECIPE), quiet=True)
    assert not glob.glob(os.path.join(out, "tensorboard", "*"))


def test_without_the_package_it_is_one_line_before_any_work(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what a missing package does to the import
    out = tmp_path / "out"
    code, stdout, err = cli(tiny_argv(data, str(out), "--tensorboard", **RECIPE), capsys)
    assert code == 1 and err.strip().splitlines() == [f"error: {tensorboard.MISSING}"]
    assert tensorboard.MISSING == "--tensorboard needs the tensorboard package: pip install tensorboard"
    assert "Start training" not in stdout and not (out / "checkpoint.pth").exists()
    # without --tensorboard the package is not needed
    code, _, err = cli(tiny_argv(data, str(out), "--check-forward", **RECIPE), capsys)
    assert code == 0, err
