"""The command line's own checks: argparse ``type``s for flag values (a bad one is a usage line
naming the flag and the accepted range, exit status 2), what the run is asked to do (``Task``) and
the flag combinations that cannot go together, and ``flag``, an option written as typed."""

import argparse
import math
from typing import NamedTuple

import torch


def _number(kind, low=None, high=None, low_open=False):
    """An argparse ``type``: ``kind`` (int or float) within [low, high] (``low_open``: > low)."""
    noun = "an integer" if kind is int else "a finite number"
    if low is not None and high is not None:
        accepted = f"{noun} from {low} to {high}"
    elif low is not None:
        accepted = f"{noun} {'>' if low_open else '>='} {low}"
    else:
        accepted = noun

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {accepted}, got {text!r}") from None
        below = low is not None and (value <= low if low_open else value < low)
        if (kind is float and not math.isfinite(value)) or below or (high is not None and value > high):  # NaN, inf
            raise argparse.ArgumentTypeError(f"expected {accepted}, got {text!r}")
        return value

    parse.__name__ = accepted  # argparse names the type in some messages
    return parse


positive_int = _number(int, 1)


non_negative_int = _number(int, 0)


positive_float = _number(float, 0, low_open=True)


non_negative_float = _number(float, 0)


unit_interval = _number(float, 0, 1)


group_factor = _number(int, -1)  # -1: off


seed_value = _number(int, 0, 2**32 - 1)  # the usual seed range; torch takes more, but seed + epoch must still fit


def path_text(text):
    """An argparse ``type`` for a file or folder: an empty one (``--export "$OUT"`` with OUT unset)
    would read as the flag left out, and a run would start that was not asked for."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path (an unset shell variable?); give a file or folder")
    return text


def device_flag(text):
    """An argparse ``type`` for --device: auto, cpu, mps, cuda or cuda:N (any torch device string)."""
    if text == "auto":
        return text
    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, mps, cuda or cuda:N, got {text!r}") from None
    return text


class Task(NamedTuple):
    """What a run is asked to do: train, or ``--test-only``, ``--predict``, ``--check-forward``
    or ``--export``, with the model of ``--weights`` (or ``--resume``)."""

    weights: str = "DEFAULT"
    resume: str | None = None
    test_only: bool = False
    predict: list[str] | None = None
    check_forward: bool = False
    export: str | None = None

    @property
    def training(self):
        return not (self.test_only or self.predict or self.check_forward or self.export)


def combination_error(task, epochs, min_size, max_size):
    """What is wrong with flag values that are fine alone but not together (argparse's usage error,
    exit status 2), or None."""
    if epochs == 0 and not (task.test_only or task.predict or task.check_forward):
        return ("argument --epochs: 0 trains nothing; expected an integer >= 1 (0 only with --test-only "
                "or --predict)")
    if max_size < min_size:
        return f"argument --max-size: {max_size} is below --min-size {min_size}; expected --max-size >= --min-size"
    if task.test_only and task.predict:
        return "--test-only and --predict: choose one"
    if task.export:
        if not task.export.lower().endswith(".onnx"):
            return f"argument --export: expected a file name ending in .onnx, got {task.export!r}"
        if task.test_only or task.resume or task.check_forward:
            return ("--export writes the model of --weights CHECKPOINT: not with --test-only, --resume or "
                    "--check-forward")
    elif str(task.weights).lower().endswith(".onnx") and not task.predict:
        return (f"argument --weights: {task.weights} is an ONNX model, which only --predict runs; train, "
                f"evaluate or --export from a checkpoint (.pth)")
    return None


def augmentation_error(data_augmentation, use_copypaste):
    """--use-copypaste goes with --data-augmentation lsj only, as in torchvision's train.py (its
    fixed-size canvases are what one image's objects are pasted into); the message, or None."""
    if use_copypaste and data_augmentation != "lsj":
        return (f"argument --use-copypaste: works with --data-augmentation lsj only (as torchvision's train.py), got "
                f"--data-augmentation {data_augmentation}; add --data-augmentation lsj or drop --use-copypaste")
    return None


def flag(key, value=None):
    """The option as typed: ``--lr 0.1``; a switch alone (``--amp``), or negated (``--no-amp``)."""
    name = "--" + key.replace("_", "-")
    if isinstance(value, bool):
        return name if value else "--no-" + name[2:]
    if isinstance(value, (list, tuple)):  # --classes a,b,c
        value = ",".join(map(str, value))
    return name if value is None else f"{name} {value}"


def class_list(text):
    """``--classes a,b,c``: the names in order, each once."""
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r}: an empty name; expected names separated by commas, e.g. cat,dog")
    if len(set(names)) < len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: a name given twice")
    return names
