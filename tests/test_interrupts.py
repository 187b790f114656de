"""Ctrl-C, as a user presses it: at any moment of a run, twice, and while data is being made.

Each real SIGINT goes to a training process on tiny data; it must end with exit status 130 after
the iteration under way (a second press: inside it), one message without a traceback, and a
loadable checkpoint (or none, if no epoch ended). What is checked is the order of the run's own
log lines, and times as a share of the run's own pace: both hold on a loaded machine.
"""

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import ROOT_DIR, make_data, run_main, tiny_argv

import tv_training
from finetune import errors
from finetune.data import formats, synthetic
from finetune.errors import DatasetError
from finetune.models import specs
from finetune.outputs import plots
from finetune.run import interrupts

EPOCHS = 100  # a run that went on after Ctrl-C would take minutes: far longer than any stop here
# a training iteration's log line (--print-freq 1: one per iteration) and its seconds
ITERATION = re.compile(r"^Epoch: \[\d+\]\s+\[\s*\d+/\d+\].*\btime: (\d+\.\d+)", re.MULTILINE)
PRESSED = "Ctrl-C: stopping after the current iteration"


def start(argv, one_stream=False):
    # A process started in the background inherits SIGINT as ignored; give it the default, as a
    # terminal would. One thread each: several runs share the cores. Unbuffered, and with
    # ``one_stream`` stderr in stdout's pipe: the Ctrl-C message then sits among the log lines in
    # the order the process wrote them (buffered lines would come out at exit, or never after os._exit).
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, os.path.join(ROOT_DIR, "tv_training.py"), *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT if one_stream else subprocess.PIPE,
                            text=True, cwd=ROOT_DIR, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(predicate, proc, timeout=120):
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, "".join(filter(None, proc.communicate()))[-2000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def finish(proc, deadline_s=120):
    """Wait for the process, killing it after ``deadline_s`` (a hang, not a slow machine); returns
    (stdout, stderr, the time.monotonic() it ended at, or None if it had to be killed)."""
    try:
        out, err = proc.communicate(timeout=deadline_s)
        return out, err, time.monotonic()
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return out, err, None


def check_stopped_run(proc, log, out, argv):
    assert proc.returncode == 130, log[-2000:]
    assert "Traceback" not in log and "Exception ignored" not in log, log[-2000:]
    ckpt = os.path.join(out, "checkpoint.pth")
    if os.path.exists(ckpt):
        state = torch.load(ckpt, weights_only=True)  # complete, loadable
        rebuilt = specs.build_model(tv_training.MODELS, state["model_spec"], state["model"])
        assert set(rebuilt.state_dict()) == set(state["model"])
        assert f"epoch {state['epoch']} is the last complete one, saved in {ckpt}" in log
        # the hint repeats the run's own options, so the resumed run has the same settings
        # the script as it was started (a path from another folder pastes as it is)
        script = os.path.join(ROOT_DIR, "tv_training.py")
        python = os.path.relpath(sys.executable, ROOT_DIR)  # the process ran in ROOT_DIR with this interpreter
        python = python if not python.startswith(os.pardir) else sys.executable
        if shutil.which("python") and os.path.abspath(shutil.which("python")) == os.path.abspath(sys.executable):
            python = "python"
        assert f"resume with: {python} {script} {' '.join(argv)} --resume {ckpt}" in log
    else:
        assert "no epoch completed" in log
    assert not [f for f in os.listdir(out) if f.startswith(".tmp") or f.endswith(".tmp")]


@pytest.mark.slow  # four training processes (pytest.ini)
def test_ctrl_c_at_many_points_stops_within_seconds(data, tmp_path):
    """SIGINT during the first iterations, and at a spread of delays after the first checkpoint
    appears (checkpoint writing, figures, the next epoch's first steps, evaluation)."""
    runs = []
    for i, delay in enumerate([None, 0.0, 0.15, 0.5]):
        out = str(tmp_path / f"run{i}")
        argv = tiny_argv(data, out, epochs=EPOCHS)
        runs.append((delay, out, argv, start(argv, one_stream=True)))
    pressed = []
    for delay, out, _, proc in runs:
        if delay is None:  # during the first iterations: no epoch complete yet
            wait_for(lambda out=out: os.path.exists(os.path.join(out, "preview.png")), proc)
        else:
            wait_for(lambda out=out: os.path.exists(os.path.join(out, "checkpoint.pth")), proc)
            time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        pressed.append(time.monotonic())
    with ThreadPoolExecutor(len(runs)) as pool:  # side by side: each end time is the run's own
        ended = list(pool.map(lambda run: finish(run[3]), runs))
    # seconds per iteration of these runs, under whatever load the machine has right now
    pace = statistics.median(float(s) for log, _, _ in ended for s in ITERATION.findall(log))
    for (delay, out, argv, proc), t_pressed, (log, _, t_ended) in zip(runs, pressed, ended):
        assert t_ended is not None, ("still running 120 s after Ctrl-C", delay, log[-2000:])
        check_stopped_run(proc, log, out, argv)
        assert PRESSED in log, log[-2000:]
        # the iteration under way may end (its line); none starts after it
        assert len(ITERATION.findall(log.partition(PRESSED)[2])) <= 1, (delay, log[-3000:])
        # and the stop took a small share of what the rest of the run would have
        rest = (2 * EPOCHS - len(ITERATION.findall(log))) * pace  # 2 iterations an epoch, evaluation not counted
        assert t_ended - t_pressed < rest / 4, (delay, t_ended - t_pressed, rest)


def test_second_ctrl_c_stops_at_once(data, tmp_path):
    out = str(tmp_path / "twice")
    # 480-px inputs: an iteration long enough (seconds on one thread) for the second Ctrl-C to land
    # inside it. float32: the handler runs between ops, and some bfloat16 ops at 800 px took over a
    # second on torch 2.11 (what is checked is the handler, not one op's length).
    argv = tiny_argv(data, out, "--min-size", "480", "--max-size", "800", "--no-amp", epochs=EPOCHS)
    proc = start(argv, one_stream=True)
    # The first iteration's log line is printed as it ends, and names its length. The first press
    # comes a fifth of that length later: well inside the second iteration (about as long), and
    # after its batch was fetched even if the machine's load held this process up for a while (a
    # press before a batch is fetched stops the run at once, leaving nothing for the second press).
    # The second press waits for the first one's message: Python runs a signal's handler between
    # ops, and two presses inside one long op would reach it as one.
    watchdog = threading.Timer(120, proc.kill)  # a hang, not a slow machine
    watchdog.start()
    lines = []

    def read_until(found):
        for line in proc.stdout:
            lines.append(line)
            if found(line):
                return line
        raise AssertionError("".join(lines)[-2000:])

    try:
        first = ITERATION.match(read_until(ITERATION.match))
        time.sleep(float(first.group(1)) / 5)
        proc.send_signal(signal.SIGINT)
        read_until(lambda line: PRESSED in line)
        time.sleep(interrupts.StopAtSafePoint.SAME_PRESS_S + 0.1)  # a second press, not an echo of the first
        proc.send_signal(signal.SIGINT)
        lines.append(proc.stdout.read())
        proc.wait()
    finally:
        watchdog.cancel()
        proc.kill()  # (nothing left to end once it exited)
    log = "".join(lines)
    assert proc.returncode == 130 and "Traceback" not in log, log[-2000:]  # (-9: still running after 120 s)
    assert log.strip().splitlines()[-1] == "Ctrl-C again: stopped at once"  # no epoch complete: no checkpoint
    # inside the iteration the first press waited for: it never logged its line (lines are
    # written as they are printed)
    assert len(ITERATION.findall(log)) == 1 and not ITERATION.search(log.partition(PRESSED)[2]), log[-2000:]
    assert not [f for f in os.listdir(out) if f.startswith(".tmp")]


def test_ctrl_c_while_torch_is_loading_is_one_line(tmp_path):
    proc = start(["--demo", "--data-path", str(tmp_path / "data"), "--output-dir", str(tmp_path / "out")])
    time.sleep(0.3)  # python is starting or importing torch (seconds on 2 cores)
    proc.send_signal(signal.SIGINT)
    out, err, _ = finish(proc)
    assert proc.returncode == 130 and err.strip() == "interrupted while starting: nothing was done", err[-2000:]
    assert not os.path.exists(tmp_path / "data") and not os.path.exists(tmp_path / "out")


def test_a_second_press_after_the_last_epoch_names_the_report_not_a_resume(monkeypatch, tmp_path, capfd):
    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    ckpt = tmp_path / "checkpoint.pth"
    ckpt.write_bytes(b"the last epoch")
    with interrupts.StopAtSafePoint(str(tmp_path)) as stop:
        stop.trained = True  # the final figures or the report are being drawn
        stop._on_sigint(signal.SIGINT, None)
        stop._first -= stop.SAME_PRESS_S
        stop._on_sigint(signal.SIGINT, None)
    assert exits == [130]
    assert capfd.readouterr().err.strip().endswith(
        f"Ctrl-C again: stopped at once; training is complete, in {ckpt} (the report: --test-only --weights {ckpt})")


def test_handler_counts_presses_and_is_restored(monkeypatch, tmp_path):
    def callers_handler(signum, frame):
        pass

    previous = signal.signal(signal.SIGINT, callers_handler)
    try:
        exits = []
        monkeypatch.setattr(os, "_exit", exits.append)
        half_written = tmp_path / f".tmp-{os.getpid()}-checkpoint.pth"
        with interrupts.StopAtSafePoint(str(tmp_path)) as stop:
            assert signal.getsignal(signal.SIGINT) == stop._on_sigint
            assert not stop.should_stop()
            stop._on_sigint(signal.SIGINT, None)  # first: recorded, nothing raised
            stop._on_sigint(signal.SIGINT, None)  # the same press again at once (torchrun forwarding it)
            assert stop.requested == 1 and stop.should_stop() and not exits
            with pytest.raises(KeyboardInterrupt):
                stop.check()
            half_written.write_bytes(b"partial")
            (tmp_path / "report.partial" / "earlier" / "20261204-101010").mkdir(parents=True)
            (tmp_path / "report.partial" / "pr.png").write_bytes(b"half a report")
            stop._first -= stop.SAME_PRESS_S  # later: a real second press ends the process
            stop._on_sigint(signal.SIGINT, None)
            assert exits == [130] and not half_written.exists()
            # the report being drawn goes; earlier reports the renames had taken from report/ stay
            assert os.listdir(tmp_path / "report.partial") == ["earlier"]
        assert signal.getsignal(signal.SIGINT) is callers_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_stoppable_loader_stops_before_the_next_batch():
    with interrupts.StopAtSafePoint() as stop:
        loader = stop.wrap([10, 11, 12])
        assert len(loader) == 3
        seen = []
        with pytest.raises(KeyboardInterrupt):
            for batch in loader:
                seen.append(batch)
                if batch == 11:
                    stop.requested = 1  # Ctrl-C during the second iteration
        assert seen == [10, 11]


def test_main_restores_the_callers_handler(data):
    def callers_handler(signum, frame):
        pass

    previous = signal.signal(signal.SIGINT, callers_handler)
    try:
        run_main(*tiny_argv(data, ""))  # the handler guards training with or without an output folder
        assert signal.getsignal(signal.SIGINT) is callers_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_while_the_preview_is_drawn_stops_before_the_first_step(data, tmp_path, monkeypatch):
    """The first press can land before any iteration: while preview.png is drawn."""
    out = str(tmp_path / "out")
    real = plots.save_preview

    def pressed_while_drawing(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(plots, "save_preview", pressed_while_drawing)
    try:
        run_main(*tiny_argv(data, out))
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
    real = synthetic.make_synthetic_image
    calls = []

    def interrupted_on_the_third_image(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "make_synthetic_image", interrupted_on_the_third_image)
    with pytest.raises(KeyboardInterrupt):
        formats.prepare_data(root, lambda r: make_data(r, num_images=5))
    assert not os.path.exists(root) and not leftovers(str(tmp_path))
    monkeypatch.setattr(synthetic, "make_synthetic_image", real)
    formats.prepare_data(root, lambda r: make_data(r, num_images=5))  # sees no dataset: makes it again
    assert len(os.listdir(os.path.join(root, "PNGImages"))) == len(os.listdir(os.path.join(root, "PedMasks"))) == 5
    assert not leftovers(str(tmp_path))


def test_generation_refuses_to_mix_with_an_existing_folder(tmp_path):
    root = tmp_path / "SyntheticPed"
    (root / "PedMasks").mkdir(parents=True)
    (root / "PedMasks" / "mine_mask.png").write_bytes(b"x")
    with pytest.raises(DatasetError, match="PedMasks: already there"):
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
    _, err, t_ended = finish(proc)
    assert t_ended is not None and proc.returncode == 130 and "Traceback" not in err
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
        formats.prepare_data(root)
    assert not os.path.exists(root) and not leftovers(str(parent))
    monkeypatch.setattr(zipfile.ZipFile, "_extract_member", real_extract)
    formats.prepare_data(root)
    assert sorted(os.listdir(os.path.join(root, "PNGImages"))) == sorted(os.listdir(os.path.join(src, "PNGImages")))
    assert len(os.listdir(os.path.join(root, "PedMasks"))) == 3 and not leftovers(str(parent))
