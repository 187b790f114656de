"""Tests for utils.py: meters, the log line format, batching and the single-process helpers."""

import builtins
import io
import os
import re
import stat
import types

import pytest
import torch
import torch.distributed as dist

import utils
from finetune.outputs import writing

# --------------------------------------------------------------------------- SmoothedValue


def test_smoothed_value_window_statistics():
    meter = utils.SmoothedValue(window_size=3)
    for v in (10.0, 1.0, 5.0, 3.0):  # the window keeps 1, 5, 3
        meter.update(v)
    assert list(meter.deque) == [1.0, 5.0, 3.0]
    assert meter.median == 3.0
    assert meter.avg == pytest.approx(3.0)
    assert meter.max == 5.0
    assert meter.value == 3.0
    # the global average covers every value, not only the window
    assert meter.count == 4
    assert meter.global_avg == pytest.approx(19.0 / 4)


def test_smoothed_value_weighted_update_and_default_format():
    meter = utils.SmoothedValue()
    assert meter.fmt == "{median:.4f} ({global_avg:.4f})"
    meter.update(2.0, n=3)  # e.g. a batch mean over 3 items
    meter.update(4.0)
    assert meter.count == 4
    assert meter.global_avg == pytest.approx((2.0 * 3 + 4.0) / 4)
    # the window holds one entry per update: median of [2, 4] is the lower one (torch.median)
    assert meter.median == 2.0
    assert str(meter) == f"{2.0:.4f} ({2.5:.4f})" == "2.0000 (2.5000)"


def test_smoothed_value_custom_format():
    meter = utils.SmoothedValue(window_size=1, fmt="{value:.6f}")
    meter.update(0.1)
    meter.update(0.00009)
    assert str(meter) == "0.000090"
    fmt_all = utils.SmoothedValue(fmt="{median} {avg} {global_avg} {max} {value}")
    fmt_all.update(1)
    fmt_all.update(3)
    assert str(fmt_all) == f"1 {2.0} {2.0} 3 3"


# --------------------------------------------------------------------------- MetricLogger


def test_metric_logger_update_tensors_and_floats():
    logger = utils.MetricLogger(delimiter="  ")
    logger.update(loss=torch.tensor(2.5), lr=0.01, count=3)
    logger.update(loss=torch.tensor([1.5]), lr=0.02, count=5, skipped=None)
    assert isinstance(logger.meters["loss"].value, float)  # tensors are stored as Python numbers
    assert logger.meters["loss"].global_avg == pytest.approx(2.0)
    assert logger.meters["lr"].value == pytest.approx(0.02)
    assert logger.meters["count"].max == 5
    assert "skipped" not in logger.meters  # None values are ignored
    # attribute access to meters
    assert logger.loss is logger.meters["loss"]
    assert logger.lr.value == pytest.approx(0.02)
    # str(): "name: meter" joined by the delimiter, in insertion order
    assert str(logger) == "  ".join(f"{k}: {m}" for k, m in logger.meters.items())
    assert str(logger).startswith("loss: 1.5000 (2.0000)  lr: ")


def test_metric_logger_unknown_attribute_and_non_number():
    logger = utils.MetricLogger()
    logger.update(loss=1.0)
    with pytest.raises(AttributeError, match="no_such_meter"):
        _ = logger.no_such_meter
    assert not hasattr(logger, "other")
    with pytest.raises(TypeError, match="loss"):
        logger.update(loss="1.0")
    with pytest.raises(TypeError):
        logger.update(values=[1.0, 2.0])
    assert logger.meters["loss"].count == 1  # the bad updates recorded nothing


def test_metric_logger_add_meter_uses_its_format():
    logger = utils.MetricLogger(delimiter="  ")
    logger.add_meter("lr", utils.SmoothedValue(window_size=1, fmt="{value:.6f}"))
    logger.update(lr=0.005, loss=3.87921)
    assert str(logger) == "lr: 0.005000  loss: 3.8792 (3.8792)"


# --------------------------------------------------------------------------- log_every

EPOCH_LINE = re.compile(
    r"^Epoch: \[0\]  \[(?P<i>[ \d]{2})/60\]  eta: \d+:\d\d:\d\d  "
    r"lr: \d\.\d{6}  loss: \d+\.\d{4} \(\d+\.\d{4}\)  time: \d+\.\d{4}  data: \d+\.\d{4}(  max mem: \d+)?$"
)
EPOCH_TOTAL = re.compile(r"^Epoch: \[0\] Total time: \d+:\d\d:\d\d \(\d+\.\d{4} s / it\)$")


def test_log_every_epoch_lines(capsys):
    logger = utils.MetricLogger(delimiter="  ")
    logger.add_meter("lr", utils.SmoothedValue(window_size=1, fmt="{value:.6f}"))
    seen = []
    for i, item in enumerate(logger.log_every(list(range(60)), 10, header="Epoch: [0]")):
        seen.append(item)
        # as in engine.train_one_epoch: the loop body updates the meters before the line is printed
        logger.update(lr=0.00009 * (i + 1), loss=3.8792 / (i + 1))
    assert seen == list(range(60))  # every item is yielded, in order

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8, lines
    counters = []
    for line in lines[:-1]:
        m = EPOCH_LINE.match(line)
        assert m, line
        counters.append(m.group("i"))
    # printed at i = 0, 10, ..., 50 and at the last item; counter padded to the width of N
    assert counters == [" 0", "10", "20", "30", "40", "50", "59"]
    # the tutorial's first line: meters show the values of the update made for that item
    assert re.match(
        r"^Epoch: \[0\]  \[ 0/60\]  eta: 0:00:00  lr: 0\.000090  loss: 3\.8792 \(3\.8792\)  "
        r"time: \d\.\d{4}  data: \d\.\d{4}(  max mem: \d+)?$",
        lines[0],
    ), lines[0]
    assert f"lr: {0.00009 * 11:.6f}" in lines[1]
    assert f"lr: {0.00009 * 60:.6f}" in lines[6]
    if not torch.cuda.is_available():
        assert "max mem" not in "\n".join(lines)
    assert EPOCH_TOTAL.match(lines[-1]), lines[-1]


def test_log_every_test_header(capsys):
    logger = utils.MetricLogger(delimiter="  ")
    for _ in logger.log_every(range(50), 100, header="Test:"):
        logger.update(model_time=0.5, evaluator_time=0.01)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3, lines
    line = re.compile(
        r"^Test:  \[(\s?\d{1,2})/50\]  eta: \d+:\d\d:\d\d  model_time: 0\.5000 \(0\.5000\)  "
        r"evaluator_time: 0\.0100 \(0\.0100\)  time: \d+\.\d{4}  data: \d+\.\d{4}(  max mem: \d+)?$"
    )
    assert line.match(lines[0]) and lines[0].startswith("Test:  [ 0/50]"), lines[0]
    assert line.match(lines[1]) and lines[1].startswith("Test:  [49/50]"), lines[1]
    assert re.match(r"^Test: Total time: \d+:\d\d:\d\d \(\d+\.\d{4} s / it\)$", lines[2]), lines[2]


def test_log_every_eta_from_iteration_time(capsys, monkeypatch):
    """eta = average iteration time x items left, formatted H:MM:SS."""
    clock = iter(float(t) for t in range(0, 10000, 100))  # each time.time() call advances 100 s
    monkeypatch.setattr(utils, "time", types.SimpleNamespace(time=lambda: next(clock)))
    logger = utils.MetricLogger(delimiter="  ")
    for _ in logger.log_every(range(5), 1, header="H"):
        pass
    lines = capsys.readouterr().out.splitlines()
    # at every line each iteration took 200 s (two clock reads apart) and data 100 s
    etas = [re.search(r"eta: (\S+)", line).group(1) for line in lines[:-1]]
    assert etas == ["0:16:40", "0:13:20", "0:10:00", "0:06:40", "0:03:20"]  # 200 s x (5 - i)
    assert all("time: 200.0000  data: 100.0000" in line for line in lines[:-1])
    assert lines[-1].startswith("H Total time: 0:")


# --------------------------------------------------------------------------- small helpers


def test_collate_fn_transposes_batch():
    batch = [(torch.zeros(3, 4, 5), {"id": 0}), (torch.ones(3, 6, 7), {"id": 1})]
    images, targets = utils.collate_fn(batch)
    assert isinstance(images, tuple) and isinstance(targets, tuple)
    assert [im.shape for im in images] == [(3, 4, 5), (3, 6, 7)]  # different sizes stay separate
    assert targets == ({"id": 0}, {"id": 1})
    assert images[1] is batch[1][0]


def test_mkdir_creates_nested_and_accepts_existing(tmp_path):
    path = tmp_path / "a" / "b"
    utils.mkdir(str(path))
    assert path.is_dir()
    utils.mkdir(str(path))  # exists: no error
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError):
        utils.mkdir(str(tmp_path / "file" / "sub"))  # other OS errors still raise


def test_single_process_helpers():
    assert not dist.is_initialized()
    assert utils.get_world_size() == 1
    assert utils.get_rank() == 0
    assert utils.is_main_process()
    assert not utils.is_dist_avail_and_initialized()
    losses = {"loss_a": torch.tensor(1.5), "loss_b": torch.tensor(2.0)}
    reduced = utils.reduce_dict(losses)
    assert reduced is losses
    assert reduced["loss_a"].item() == 1.5
    data = {"x": [1, 2]}
    gathered = utils.all_gather(data)
    assert gathered == [data] and gathered[0] is data


def test_smoothed_value_synchronize_without_process_group():
    meter = utils.SmoothedValue()
    meter.update(1.0)
    meter.update(3.0)
    meter.synchronize_between_processes()  # no process group: nothing changes
    assert (meter.count, meter.total) == (2, 4.0)


# (init_distributed_mode is tested in tests/test_distributed.py)


def test_setup_for_distributed_silences_non_master(monkeypatch, capsys):
    monkeypatch.setattr(builtins, "print", builtins.print)  # undone after the test
    utils.setup_for_distributed(False)
    print("hidden line")
    print("forced line", force=True)
    assert capsys.readouterr().out == "forced line\n"


def test_setup_for_distributed_master_prints(monkeypatch, capsys):
    monkeypatch.setattr(builtins, "print", builtins.print)
    utils.setup_for_distributed(True)
    print("master line", end="!\n")
    print("forced", force=True)
    assert capsys.readouterr().out == "master line!\nforced\n"


# --------------------------------------------------------------------------- atomic saving


def _expected_mode():
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _leftovers(folder, keep):
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.mark.parametrize("saver", [utils.atomic_save, utils.save_on_master])
def test_atomic_save_writes_loadable_file(tmp_path, saver):
    path = tmp_path / "checkpoint.pth"
    obj = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 3}
    saver(obj, str(path))
    loaded = torch.load(path, weights_only=True)
    assert loaded["epoch"] == 3
    assert torch.equal(loaded["model"]["w"], obj["model"]["w"])
    assert _leftovers(tmp_path, {"checkpoint.pth"}) == []  # no temporary file left
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode != 0o600
    assert mode == _expected_mode()  # the permissions a plain torch.save would give


def test_atomic_save_overwrites_and_accepts_pathlike(tmp_path):
    path = tmp_path / "checkpoint.pth"
    utils.save_on_master({"epoch": 1}, path)
    utils.save_on_master({"epoch": 2}, path)
    assert torch.load(path, weights_only=True) == {"epoch": 2}
    assert _leftovers(tmp_path, {"checkpoint.pth"}) == []


@pytest.mark.parametrize("saver", [utils.atomic_save, utils.save_on_master])
def test_atomic_save_failure_keeps_previous_file(tmp_path, monkeypatch, saver):
    path = tmp_path / "checkpoint.pth"
    saver({"epoch": 1, "w": torch.ones(3)}, str(path))
    real_save = torch.save

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial checkpoint bytes")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        saver({"epoch": 2, "w": torch.zeros(3)}, str(path))
    monkeypatch.setattr(torch, "save", real_save)

    loaded = torch.load(path, weights_only=True)
    assert loaded["epoch"] == 1
    assert torch.equal(loaded["w"], torch.ones(3))
    assert _leftovers(tmp_path, {"checkpoint.pth"}) == []


def test_atomic_save_interrupted_first_save_leaves_nothing(tmp_path, monkeypatch):
    def interrupted(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        utils.atomic_save({"epoch": 0}, str(tmp_path / "model.pth"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_atomic_write_failure_keeps_previous_file_and_leaves_no_temporary(tmp_path, error):
    path = tmp_path / "metrics.json"

    def whole(tmp):
        with open(tmp, "w") as f:
            f.write("old")

    utils.atomic_write(path, whole)  # a path object works too
    assert path.read_text() == "old"
    written_to = []

    def half_written_then_fails(tmp):
        written_to.append(os.path.basename(tmp))
        with open(tmp, "w") as f:
            f.write("half of the n")
        raise error

    with pytest.raises(type(error)):
        utils.atomic_write(str(path), half_written_then_fails)
    assert path.read_text() == "old"
    assert _leftovers(tmp_path, {"metrics.json"}) == []
    # the name finetune.run.interrupts.StopAtSafePoint removes on a second Ctrl-C
    assert written_to == [f".tmp-{os.getpid()}-metrics.json"]


def test_outputs_json_writer_failing_keeps_previous_file(tmp_path):
    """finetune.outputs.writing writes through utils.atomic_write: a failed metrics.json leaves the last one whole."""

    path = tmp_path / "metrics.json"
    writing.write_json_atomic([{"epoch": 0}], str(path))
    with pytest.raises(TypeError):  # not JSON: json.dump fails after writing part of the list
        writing.write_json_atomic([{"epoch": 0}, {"epoch": object()}], str(path))
    assert path.read_text() == '[\n {\n  "epoch": 0\n }\n]'
    assert _leftovers(tmp_path, {"metrics.json"}) == []


def test_save_on_master_file_object_falls_back_to_torch_save(tmp_path):
    buffer = io.BytesIO()
    utils.save_on_master({"epoch": 5}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == {"epoch": 5}
