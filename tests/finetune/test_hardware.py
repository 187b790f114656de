"""finetune/hardware.py without a GPU: --device auto's choice (CUDA, then MPS, then the CPU),
--amp's autocast type and its log line, and MPS's CPU fallback line, with the backends mocked."""

import pytest
import torch

from finetune import hardware
from finetune.errors import TutorialError


@pytest.fixture
def backends(monkeypatch):
    """Set which backends "exist": ``backends(cuda=..., mps=..., bf16=...)``."""

    def present(cuda=False, mps=False, bf16=False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")

    return present


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"),
                                                 (False, False, "cpu")])
def test_auto_picks_cuda_then_mps_then_the_cpu(backends, cuda, mps, expected):
    backends(cuda=cuda, mps=mps)
    assert hardware.pick_device("auto") == torch.device(expected)
    assert hardware.pick_device("cpu") == torch.device("cpu")  # a named device is taken as named
    assert hardware.pick_device("mps") == torch.device("mps")
    if cuda:  # under torchrun each process its own GPU
        assert hardware.pick_device("auto", gpu=1) == torch.device("cuda", 1)


def test_mps_asked_for_where_there_is_none_is_one_line(backends):
    backends(mps=False)
    with pytest.raises(TutorialError, match=r"^--device mps: not available here; use --device cpu, cuda, mps or auto"):
        hardware.check_device("mps")
    backends(mps=True)
    hardware.check_device("mps")


@pytest.mark.parametrize("bf16, choice, expected", [
    (True, "auto", torch.bfloat16), (False, "auto", torch.float16), (True, "float16", torch.float16),
    (False, "float16", torch.float16), (True, "bfloat16", torch.bfloat16)])
def test_amp_dtype_on_cuda_is_bfloat16_where_the_gpu_has_it(backends, bf16, choice, expected):
    backends(cuda=True, bf16=bf16)
    assert hardware.amp_dtype("cuda", choice) == expected


def test_amp_dtype_counts_native_bfloat16_only(monkeypatch, backends):
    """torch reports bfloat16 as supported on older GPUs too (emulated, slower than float16): auto asks
    for native support."""
    backends(cuda=True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert hardware.amp_dtype("cuda", "auto") == torch.float16


def test_amp_dtype_that_cannot_run_is_one_line(backends):
    backends(cuda=True, bf16=False)
    with pytest.raises(TutorialError, match=r"^--amp-dtype bfloat16: Tesla T4 has no bfloat16 .* --amp-dtype float16"):
        hardware.amp_dtype("cuda:0", "bfloat16")
    for device in ("cpu", "mps"):  # their autocast type is bfloat16
        assert hardware.amp_dtype(device, "auto") == hardware.amp_dtype(device, "bfloat16") == torch.bfloat16
        with pytest.raises(TutorialError, match=rf"^--amp-dtype float16: for CUDA GPUs only; --amp on {device} "
                                                r"trains in bfloat16.*drop --amp-dtype"):
            hardware.amp_dtype(device, "float16")


@pytest.mark.parametrize("bf16, choice, line", [
    (True, "auto", "mixed precision: bfloat16 (no GradScaler)"),
    (False, "auto", "mixed precision: float16 + GradScaler"),
    (True, "float16", "mixed precision: float16 + GradScaler")])
def test_the_log_says_which_precision_trains(backends, capsys, bf16, choice, line):
    backends(cuda=True, bf16=bf16)
    hardware.note_precision("auto", True, choice, training=True)
    assert capsys.readouterr().out.splitlines() == [line]
    hardware.note_precision("auto", True, choice, training=True, main_process=False)  # another torchrun rank
    hardware.note_precision("auto", True, choice, training=False)  # --test-only, --predict: no training
    assert capsys.readouterr().out == ""


def test_the_cpu_keeps_its_bfloat16_and_amp_dtype_without_amp_is_said(backends, capsys):
    backends()
    hardware.note_precision("auto", True, "auto", training=True)
    assert capsys.readouterr().out == "mixed precision: bfloat16 (no GradScaler)\n"
    hardware.note_precision("cpu", False, "auto", training=True)  # the tutorial's float32: nothing said
    assert capsys.readouterr().out == ""
    hardware.note_precision("cpu", False, "bfloat16", training=True)
    assert capsys.readouterr().out.startswith("warning: --amp-dtype bfloat16 does nothing without --amp")


def test_mps_fallback_line_names_what_falls_back(backends, capsys):
    """This build's torchvision ops without an MPS kernel are named (a Linux wheel has none), and
    the line says what PYTORCH_ENABLE_MPS_FALLBACK does."""
    missing = [op for op in hardware.DETECTION_OPS
               if not torch._C._dispatch_has_kernel_for_dispatch_key(f"torchvision::{op}", "MPS")]
    on = hardware.mps_fallback_line({"PYTORCH_ENABLE_MPS_FALLBACK": "1"})
    assert on.startswith("device mps (Apple GPU): ") and "run on the CPU (PYTORCH_ENABLE_MPS_FALLBACK=1" in on
    assert all(op in on for op in missing) and ("no MPS kernel" in on) == bool(missing)
    for environ in ({}, {"PYTORCH_ENABLE_MPS_FALLBACK": "0"}):
        off = hardware.mps_fallback_line(environ)
        assert "unset or 0, so an operator without an MPS kernel stops the run" in off
        assert "start with PYTORCH_ENABLE_MPS_FALLBACK=1" in off
    backends(mps=True)
    hardware.note_device("auto")
    backends(mps=False)
    hardware.note_device("auto")  # the CPU: nothing to say
    assert capsys.readouterr().out.count("device mps (Apple GPU)") == 1


def test_describe_device_names_mps():
    assert hardware.describe_device("mps").startswith("Apple GPU (MPS)")
