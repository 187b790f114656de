"""This project's speed-ups for torchvision's detection models, and the code that undoes them.

    import speedups
    speedups.speed_up_model(model)        # same detections, less time (docs/speed.md)
    speedups.as_reference_model(model)    # back to stock torchvision (for comparisons)

Each change keeps the results (equal masks and detections; the same function up to float
rounding) and is applied to one model instance, never to torchvision's classes:

* ``paste_masks_in_image`` / ``FastMaskPasteTransform``: Mask R-CNN masks pasted into one
  preallocated tensor (torchvision builds a full-image tensor per detection, then stacks them);
* ``fold_frozen_batchnorm``: the frozen BatchNorm of ResNet bottlenecks folded into their
  convolutions at run time;
* ``fast_roi_align`` / ``FastMultiScaleRoIAlign``: CPU RoI pooling as one weighted gather
  (``F.embedding_bag``), forward and backward several times faster than torchvision's one-core
  kernel, the same values and gradients up to float rounding;
* one copy of the pooled feature maps in the poolers' layout, shared by the box and mask poolers;
* ``use_channels_last`` picks the memory format (channels_last on CPUs with AVX-512; on AVX2 CPUs for
  inference only), ``inference_speedups`` switches to the inference one for an evaluation.

Opt-in, since it rounds differently: ``bfloat16_backbone`` (``--eval-bf16``) runs the backbone
under bfloat16 autocast during evaluation, the heads in float32.

Private torchvision APIs are used here and nowhere else: ``torchvision.ops.poolers``'
``_convert_to_roi_format``, ``_filter_input`` and ``_setup_scales``, and
``roi_heads.expand_boxes``. Checked against torchvision 0.29.1 (torch 2.14.1) and 0.26.0
(torch 2.11.0).
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
