"""The command line checked before any work: flag values, the device, the output folder, and a
checkpoint's recipe against the flags typed with it.

A bad flag value is a usage line naming the flag and the accepted range (exit status 2, from
argparse); everything else here raises ``TutorialError`` (one line, exit status 1).
"""

import argparse
import math

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
        if (kind is float and not math.isfinite(value)) or (low is not None and (value <= low if low_open else value < low)) \
                or (high is not None and value > high):  # NaN and infinity included
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


def device_name(text):
    """An argparse ``type`` for --device: auto, cpu, cuda or cuda:N (any torch device string)."""
    if text == "auto":
        return text
    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}") from None
    return text


def check_combinations(parser, args):
    """Flag values that are fine alone but not together (usage errors, exit status 2)."""
    if args.epochs == 0 and not (args.test_only or args.predict or args.check_forward):
        parser.error("argument --epochs: 0 trains nothing; expected an integer >= 1 (0 only with --test-only "
                     "or --predict)")
    if args.max_size < args.min_size:
        parser.error(f"argument --max-size: {args.max_size} is below --min-size {args.min_size}; expected "
                     f"--max-size >= --min-size")
    if args.test_only and args.predict:
        parser.error("--test-only and --predict: choose one")
    if getattr(args, "export", None):
        if not args.export.lower().endswith(".onnx"):
            parser.error(f"argument --export: expected a file name ending in .onnx, got {args.export!r}")
        if args.test_only or args.resume or args.check_forward:
            parser.error("--export writes the model of --weights CHECKPOINT: not with --test-only, --resume or "
                         "--check-forward")
    elif str(args.weights).lower().endswith(".onnx") and not args.predict:
        parser.error(f"argument --weights: {args.weights} is an ONNX model, which only --predict runs; train, "
                     f"evaluate or --export from a checkpoint (.pth)")


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
