"""The machine a run is on: the device ``--device`` picks (and whether it exists here), whether
the CPU has bfloat16 instructions, the autocast type ``--amp`` trains in there (``--amp-dtype``),
Apple MPS's CPU fallback, out-of-memory errors, and the device's name for the report."""

import os
import platform

import torch
import torchvision

from finetune.errors import TutorialError

# torchvision's compiled operators the detection models run (training included): the ones without
# an MPS kernel in the installed build are what the MPS fallback runs on the CPU
DETECTION_OPS = ("nms", "roi_align", "_roi_align_backward")


def pick_device(name, gpu=None):
    """``name``: "auto" (CUDA when available, then Apple's MPS, else CPU), "cpu", "mps", "cuda" or
    "cuda:N". Under torchrun with CUDA each process takes its own GPU (``gpu``, from
    ``init_distributed_mode``)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    device = torch.device(name)
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
            raise TutorialError(f"--device {name}: not available here; use --device cpu, cuda, mps or auto.")


def amp_dtype(device, choice="auto"):
    """The type ``--amp`` autocasts to on ``device``, for ``--amp-dtype`` ``choice``: "auto" is
    bfloat16 on a GPU that has it natively (``torch.cuda.is_bf16_supported``, emulation not
    counted: it runs slower than float16 there) and everywhere but CUDA (the CPU's and MPS's
    autocast type), float16 on other GPUs. float16 is for CUDA only; bfloat16 on a GPU without it,
    an error."""
    device = torch.device(device)
    if device.type != "cuda":
        if choice == "float16":
            raise TutorialError(f"--amp-dtype float16: for CUDA GPUs only; --amp on {device.type} trains in "
                                f"bfloat16 (no GradScaler needed): drop --amp-dtype or pass --amp-dtype bfloat16.")
        return torch.bfloat16
    if choice == "float16":
        return torch.float16
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    if choice == "bfloat16" and not native:
        raise TutorialError(f"--amp-dtype bfloat16: {describe_device(device)} has no bfloat16 arithmetic (it "
                            f"came with Ampere GPUs); use --amp-dtype float16 (or auto), which adds a GradScaler.")
    return torch.bfloat16 if native else torch.float16


def precision_line(dtype):
    """The log's line for --amp: "mixed precision: bfloat16 (no GradScaler)" or "float16 + GradScaler"."""
    if dtype == torch.float16:
        return "mixed precision: float16 + GradScaler"
    return "mixed precision: bfloat16 (no GradScaler)"


def note_precision(device_name, amp, choice, training, main_process=True):
    """Before training on ``--device device_name``: ``--amp-dtype choice`` checked (``amp_dtype``),
    and the log's line saying what ``amp`` trains in (``main_process`` alone prints: one line
    under torchrun); an ``--amp-dtype`` typed without ``--amp`` is said to do nothing."""
    if not training:
        return
    if not amp:
        if choice != "auto" and main_process:
            print(f"warning: --amp-dtype {choice} does nothing without --amp: training in float32; add --amp.")
        return
    line = precision_line(amp_dtype(pick_device(device_name), choice))
    if main_process:
        print(line)


def note_device(device_name, main_process=True):
    """The one line of ``mps_fallback_line`` where ``--device device_name`` picks MPS."""
    if main_process and pick_device(device_name).type == "mps":
        print(mps_fallback_line())


def mps_fallback_line(environ=None):
    """What happens on MPS to an operator without an MPS kernel, in one line. torch reads
    PYTORCH_ENABLE_MPS_FALLBACK once, as it loads (tv_training sets it on macOS before that,
    unless it was set): with 1 such an operator runs on the CPU, unset or 0 it stops the run.
    Names torchvision's detection operators that have no MPS kernel in this build."""
    environ = os.environ if environ is None else environ
    missing = [op for op in DETECTION_OPS
               if not torch._C._dispatch_has_kernel_for_dispatch_key(f"torchvision::{op}", "MPS")]
    lacking = (f"torchvision {torchvision.__version__} has no MPS kernel for {', '.join(missing)}" if missing else
               f"torchvision {torchvision.__version__} has MPS kernels for {', '.join(DETECTION_OPS)}")
    if environ.get("PYTORCH_ENABLE_MPS_FALLBACK", "").strip() not in ("", "0"):
        return (f"device mps (Apple GPU): {lacking}; operators without one run on the CPU "
                f"(PYTORCH_ENABLE_MPS_FALLBACK=1; torch names each the first time)")
    return (f"device mps (Apple GPU): {lacking}; PYTORCH_ENABLE_MPS_FALLBACK is unset or 0, so an operator without "
            f"an MPS kernel stops the run: start with PYTORCH_ENABLE_MPS_FALLBACK=1 to run those on the CPU")


def describe_device(device):
    """'NVIDIA H200', 'Apple GPU (MPS)' or the CPU's model name and core count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple GPU (MPS), {platform.machine() or 'arm64'}"
    try:
        name = read_cpuinfo()[0] or ""
    except OSError:
        name = ""
    return f"{name or platform.processor() or 'CPU'}, {os.cpu_count()} cores"
