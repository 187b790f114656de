"""Ctrl-C, as a user presses it: at any moment of a run, twice, and while data is being made.

Each real SIGINT goes to a training process on tiny data; it must end with exit status 130 within
seconds, one message without a traceback, and a loadable checkpoint (or none, if no epoch ended).
"""

import os
import signal
import subprocess
import sys
import time
import zipfile

import pytest
import torch

import dataset_formats
import errors
import model_weights
import synthetic_data
import training_run
import tv_training
from conftest import ROOT_DIR, make_data


def tiny_argv(data, out, *extra):
    return ["--demo", "--data-path", data, "--output-dir", out, "--min-size", "64", "--max-size", "96",
            "--epochs", "100", "-b", "2", "-j", "0", "--test-size", "2", "--print-freq", "1", *extra]


def start(argv):
    # A process started in the background inherits SIGINT as ignored; give it the default, as a
    # terminal would. One thread each: several runs share the cores.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, os.path.join(ROOT_DIR, "tv_training.py"), *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT_DIR, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(predicate, proc, timeout=120):
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def stopped(proc, within):
    """Wait for the process; returns (stderr, seconds it took)."""
    t0 = time.time()
    try:
        _, err = proc.communicate(timeout=within)
    finally:
        proc.kill()
    return err, time.time() - t0


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("ctrlc") / "SynthPed", num_images=6, seed=3)


def check_stopped_run(proc, err, out, argv):
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "Exception ignored" not in err, err[-2000:]
    ckpt = os.path.join(out, "checkpoint.pth")
    if os.path.exists(ckpt):
        state = torch.load(ckpt, weights_only=True)  # complete, loadable
        rebuilt = model_weights.build_model(tv_training.MODELS, state["model_spec"], state["model"])
        assert set(rebuilt.state_dict()) == set(state["model"])
        assert f"epoch {state['epoch']} is the last complete one, saved in {ckpt}" in err
        # the hint repeats the run's own options, so the resumed run has the same settings
        assert f"resume with: python tv_training.py {' '.join(argv)} --resume {ckpt}" in err
    else:
        assert "no epoch completed" in err
    assert not [f for f in os.listdir(out) if f.startswith(".tmp") or f.endswith(".tmp")]


def test_ctrl_c_at_many_points_stops_within_seconds(data, tmp_path):
    """SIGINT during the first iterations, and at a spread of delays after the first checkpoint
    appears (checkpoint writing, figures, the next epoch's first steps, evaluation)."""
    runs = []
    for i, delay in enumerate([None, 0.0, 0.15, 0.5]):
        out = str(tmp_path / f"run{i}")
        argv = tiny_argv(data, out)
        runs.append((delay, out, argv, start(argv)))
    for delay, out, argv, proc in runs:
        if delay is None:  # during the first iterations: no epoch complete yet
            wait_for(lambda: os.path.exists(os.path.join(out, "preview.png")), proc)
        else:
            wait_for(lambda: os.path.exists(os.path.join(out, "checkpoint.pth")), proc)
            time.sleep(delay)
        proc.send_signal(signal.SIGINT)
    for delay, out, argv, proc in runs:
        err, seconds = stopped(proc, within=30)
        check_stopped_run(proc, err, out, argv)
        assert seconds < 15, (delay, seconds)
        assert "Ctrl-C: stopping after the current iteration" in err


def test_second_ctrl_c_stops_at_once(data, tmp_path):
    out = str(tmp_path / "twice")
    # 800-px inputs: an iteration long enough (seconds) for the second Ctrl-C to land inside it.
    # float32: the handler runs between ops, and some bfloat16 ops at 800 px take over a second
    # on torch 2.11 (the bound below is on the handler, not on one op's length).
    argv = tiny_argv(data, out, "--min-size", "800", "--max-size", "1333", "--no-amp")
    proc = start(argv)
    wait_for(lambda: os.path.exists(os.path.join(out, "preview.png")), proc)  # training starts
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    time.sleep(training_run.StopAtSafePoint.SAME_PRESS_S + 0.1)  # a second press, not an echo of the first
    proc.send_signal(signal.SIGINT)
    err, seconds = stopped(proc, within=30)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == "Ctrl-C again: stopped at once"  # no epoch complete: no checkpoint
    assert seconds < 1.0  # well inside the iteration the first press waited for
    assert not [f for f in os.listdir(out) if f.startswith(".tmp")]


def test_handler_counts_presses_and_is_restored(monkeypatch, tmp_path):
    def callers_handler(signum, frame):
        pass

    previous = signal.signal(signal.SIGINT, callers_handler)
    try:
        exits = []
        monkeypatch.setattr(os, "_exit", exits.append)
        half_written = tmp_path / f".tmp-{os.getpid()}-checkpoint.pth"
        with training_run.StopAtSafePoint(str(tmp_path)) as stop:
            assert signal.getsignal(signal.SIGINT) == stop._on_sigint
            assert not stop.should_stop()
            stop._on_sigint(signal.SIGINT, None)  # first: recorded, nothing raised
            stop._on_sigint(signal.SIGINT, None)  # the same press again at once (torchrun forwarding it)
            assert stop.requested == 1 and stop.should_stop() and not exits
            with pytest.raises(KeyboardInterrupt):
                stop.check()
            half_written.write_bytes(b"partial")
            stop._first -= stop.SAME_PRESS_S  # later: a real second press ends the process
            stop._on_sigint(signal.SIGINT, None)
            assert exits == [130] and not half_written.exists()
        assert signal.getsignal(signal.SIGINT) is callers_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_stoppable_loader_stops_before_the_next_batch():
    with training_run.StopAtSafePoint() as stop:
        loader = stop.wrap([10, 11, 12])
        assert len(loader) == 3
        seen = []
        with pytest.raises(KeyboardInterrupt):
            for batch in loader:
                seen.append(batch)
                if batch == 11:
                    stop.requested = 1  # Ctrl-C during the second iteration
        assert seen == [10, 11]


def test_main_restores_the_callers_handler(data, tmp_path):
    def callers_handler(signum, frame):
        pass

    previous = signal.signal(signal.SIGINT, callers_handler)
    try:
        argv = tiny_argv(data, str(tmp_path / "out"), "--epochs", "1")
        tv_training.main(tv_training.get_args_parser().parse_args(argv))
        assert signal.getsignal(signal.SIGINT) is callers_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_while_the_preview_is_drawn_stops_before_the_first_step(data, tmp_path, monkeypatch):
    """The first press can land before any iteration: while preview.png is drawn."""
    out = str(tmp_path / "out")
    real = tv_training.outputs.save_preview

    def pressed_while_drawing(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(tv_training.outputs, "save_preview", pressed_while_drawing)
    argv = tiny_argv(data, out, "--epochs", "1")
    try:
        tv_training.main(tv_training.get_args_parser().parse_args(argv))
    except errors.TrainingInterrupted as e:
        assert str(e) == "interrupted: no epoch completed"
    except KeyboardInterrupt:  # (caught, or it would end the whole pytest session)
        pytest.fail("the press escaped as a KeyboardInterrupt: no handler yet while the preview was drawn")
    else:
        pytest.fail("the run did not stop")
    assert os.listdir(out) == ["preview.png"]  # drawn whole; no temporary file, no checkpoint


# --- a dataset folder is never half-made --------------------------------------------------

def leftovers(parent):
    return [n for n in os.listdir(parent) if ".partial-" in n]


def test_interrupted_generation_leaves_nothing_and_the_next_run_regenerates(tmp_path, monkeypatch):
    root = str(tmp_path / "SyntheticPed")
    real = synthetic_data.make_synthetic_image
    calls = []

    def interrupted_on_the_third_image(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic_data, "make_synthetic_image", interrupted_on_the_third_image)
    with pytest.raises(KeyboardInterrupt):
        dataset_formats.prepare_data(root, lambda r: make_data(r, num_images=5))
    assert not os.path.exists(root) and not leftovers(str(tmp_path))
    monkeypatch.setattr(synthetic_data, "make_synthetic_image", real)
    dataset_formats.prepare_data(root, lambda r: make_data(r, num_images=5))  # sees no dataset: makes it again
    assert len(os.listdir(os.path.join(root, "PNGImages"))) == len(os.listdir(os.path.join(root, "PedMasks"))) == 5
    assert not leftovers(str(tmp_path))


def test_generation_refuses_to_mix_with_an_existing_folder(tmp_path):
    root = tmp_path / "SyntheticPed"
    (root / "PedMasks").mkdir(parents=True)
    (root / "PedMasks" / "mine_mask.png").write_bytes(b"x")
    with pytest.raises(dataset_formats.DatasetError, match="PedMasks: already there"):
        make_data(root, num_images=2)
    assert os.listdir(root / "PedMasks") == ["mine_mask.png"] and not leftovers(str(tmp_path))


def test_ctrl_c_during_demo_data_generation_ends_in_one_line(tmp_path):
    root = str(tmp_path / "SyntheticPed")
    proc = start(["--demo", "--data-path", root, "--output-dir", ""])

    def some_images_written():
        parts = leftovers(str(tmp_path))
        return parts and len(os.listdir(os.path.join(str(tmp_path), parts[0], "PNGImages"))) >= 3

    wait_for(some_images_written, proc)
    proc.send_signal(signal.SIGINT)
    err, _ = stopped(proc, within=30)
    assert proc.returncode == 130 and "Traceback" not in err
    assert [line for line in err.splitlines() if line.strip()] == [
        "interrupted before training started: no checkpoint written, and a dataset being generated or "
        "extracted was discarded"]
    assert not os.path.exists(root) and not leftovers(str(tmp_path))


def test_interrupted_extraction_leaves_nothing_and_the_next_run_extracts_again(tmp_path, monkeypatch):
    src = make_data(tmp_path / "src" / "PennFudanPed", num_images=3)
    parent = tmp_path / "data"
    parent.mkdir()
    with zipfile.ZipFile(parent / "PennFudanPed.zip", "w") as zf:  # as if downloaded earlier
        for sub in ("PNGImages", "PedMasks"):
            for name in sorted(os.listdir(os.path.join(src, sub))):
                zf.write(os.path.join(src, sub, name), f"PennFudanPed/{sub}/{name}")
    root = str(parent / "PennFudanPed")
    real_extract = zipfile.ZipFile._extract_member  # what extractall calls per member
    extracted = []

    def interrupted_extract(self, member, targetpath, pwd):
        extracted.append(member)
        if len(extracted) == 3:
            raise KeyboardInterrupt
        return real_extract(self, member, targetpath, pwd)

    monkeypatch.setattr(zipfile.ZipFile, "_extract_member", interrupted_extract)
    with pytest.raises(KeyboardInterrupt):
        dataset_formats.prepare_data(root)
    assert not os.path.exists(root) and not leftovers(str(parent))
    monkeypatch.setattr(zipfile.ZipFile, "_extract_member", real_extract)
    dataset_formats.prepare_data(root)
    assert sorted(os.listdir(os.path.join(root, "PNGImages"))) == sorted(os.listdir(os.path.join(src, "PNGImages")))
    assert len(os.listdir(os.path.join(root, "PedMasks"))) == 3 and not leftovers(str(parent))
