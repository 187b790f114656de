"""An evaluation as fast as the CPU allows: ``use_channels_last`` picks the memory format
(channels_last on CPUs with AVX-512; on AVX2 CPUs for inference only), ``inference_speedups``
switches a model to the inference one for an evaluation, and ``bfloat16_backbone``
(``--eval-bf16``, opt-in since it rounds differently) runs the backbone under bfloat16 autocast,
the heads in float32.

No private torch or torchvision API is used here (checked against torchvision 0.29.1 with
torch 2.14.1, and 0.26.0 with torch 2.11.0).
"""

import contextlib

import torch


@contextlib.contextmanager
def bfloat16_backbone(model, enabled=True):
    """Within the block, ``model.backbone`` (ResNet + FPN: most of the convolutions) runs under
    CPU bfloat16 autocast and hands float32 feature maps to the heads, so boxes, scores and masks
    are still computed in float32 (autocast over the whole model would decode boxes in bfloat16,
    whose 8-bit mantissa moves a box corner at 800 px by up to 2-4 px). For evaluation only:
    the training step keeps ``--amp``'s meaning. No effect off the CPU or with ``enabled`` False.
    """
    backbone = getattr(model, "backbone", None)
    if not enabled or backbone is None:
        yield model
        return
    had_own = "forward" in vars(backbone)
    plain = backbone.forward

    def forward(x):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=x.device.type == "cpu"):
            features = plain(x)
        return type(features)((k, v.float()) for k, v in features.items())

    backbone.forward = forward
    try:
        yield model
    finally:
        if had_own:
            backbone.forward = plain
        else:
            del backbone.forward


def use_channels_last(device, choice="auto", training=True):
    """Whether to train (``training``) or evaluate/predict in channels_last memory format.

    ``choice``: "on", "off" or "auto": on a CPU whose kernels use AVX-512, channels_last, where
    oneDNN's convolutions are faster in NHWC; on CPUs with AVX2 at most, NCHW to train (the
    tutorial's 800-px training step was slower in NHWC: its backward convolutions) and
    channels_last to evaluate (its forward ones are faster); off on other devices (docs/speed.md).
    """
    if choice not in ("auto", "on", "off"):
        raise ValueError(f"channels_last choice must be auto, on or off, got {choice!r}")
    if choice == "auto":
        return torch.device(device).type == "cpu" and (
            not training or torch.backends.cpu.get_cpu_capability() == "AVX512")
    return choice == "on"


@contextlib.contextmanager
def inference_speedups(model, device, eval_bf16=False, channels_last="auto"):
    """Within the block, ``model`` (not DDP-wrapped) evaluates as fast as this CPU allows: in the
    memory format ``use_channels_last`` picks for inference where it differs from training's (the
    model goes back to its training layout on leaving, also on an exception; the optimizer's
    parameters stay the same objects), and with the bfloat16 backbone under ``eval_bf16``."""
    train_cl = use_channels_last(device, channels_last)
    switch = use_channels_last(device, channels_last, training=False) != train_cl
    if switch:
        model.to(memory_format=torch.contiguous_format if train_cl else torch.channels_last)
    try:
        with bfloat16_backbone(model, eval_bf16):
            yield model
    finally:
        if switch:
            model.to(memory_format=torch.channels_last if train_cl else torch.contiguous_format)
