"""The machine a run is on: the device ``--device`` picks (and whether it exists here), whether
the CPU has bfloat16 instructions, out-of-memory errors, and the device's name for the report."""

import os
import platform

import torch

from finetune.errors import TutorialError


def pick_device(name, gpu=None):
    """``name``: "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N". Under
    torchrun with CUDA each process takes its own GPU (``gpu``, from ``init_distributed_mode``)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else torch.device(name)
    if gpu is not None and device.type == "cuda":
        device = torch.device("cuda", gpu)
    return device


def is_out_of_memory(error):
    """Whether ``error`` is an allocation that failed (torch.OutOfMemoryError on CUDA, a
    RuntimeError from the CPU allocator)."""
    text = str(error)
    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in text or "out of memory" in text


def read_cpuinfo(cpuinfo="/proc/cpuinfo"):
    """The first CPU's model name and flags in ``cpuinfo``: ``(name, [flag, ...])``, None for a
    line the file lacks (e.g. no "flags" on ARM); raises OSError where there is no such file."""
    with open(cpuinfo) as f:
        lines = f.read().splitlines()
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), None)
    return name, flags


def cpu_has_bf16():
    """Whether this CPU has bfloat16 instructions (AVX-512 BF16, or AMX), as torch's own CPU
    capability checks see it; False where this torch has no such check."""
    checks = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(bool(check()) for check in checks if check is not None)


def check_device(name):
    """``--device`` exists here; names what is available otherwise."""
    if name == "auto":
        return
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise TutorialError(f"--device {name}: no CUDA GPU is available here (torch {torch.__version__}, "
                                f"CUDA build: {torch.version.cuda or 'none'}); use --device cpu or auto.")
        if device.index is not None and device.index >= count:
            raise TutorialError(f"--device {name}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}.")
    elif device.type != "cpu":
        backend = getattr(torch.backends, device.type, None)
        if backend is None or not getattr(backend, "is_available", lambda: False)():
            raise TutorialError(f"--device {name}: not available here; use --device cpu, cuda or auto.")


def describe_device(device):
    """'NVIDIA H200' or the CPU's model name and core count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        name = read_cpuinfo()[0] or ""
    except OSError:
        name = ""
    return f"{name or platform.processor() or 'CPU'}, {os.cpu_count()} cores"
