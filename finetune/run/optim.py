"""The optimizer (SGD or AdamW), the lr schedule (StepLR or cosine) and ``--amp``'s GradScaler
(scaling for float16 only), from the flags' values."""

import torch


def make_optimizer(model, opt, lr, momentum, weight_decay):
    """SGD (the tutorial's) or AdamW over the parameters that train.

    AdamW runs fused (one kernel over all parameters) on the CPU and CUDA: the same update,
    rounded differently, and faster than one call per parameter per operation (docs/speed.md).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if opt == "adamw":
        fused = bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def make_grad_scaler(device, amp, dtype=None):
    """The ``scaler`` for ``engine.train_one_epoch``: None without ``amp`` (float32), else a
    ``torch.amp.GradScaler``, which makes the engine autocast (to ``dtype``: ``hardware.amp_dtype``;
    None, the engine's own choice: float16 on CUDA, bfloat16 elsewhere). It scales the loss only
    for float16, whose narrow exponent range lets small gradients underflow to zero. bfloat16
    has float32's range: there a disabled scaler passes the loss and the step through unchanged,
    instead of multiplying and checking every gradient for nothing.
    """
    if not amp:
        return None
    device_type = torch.device(device).type
    float16 = dtype == torch.float16 if dtype is not None else device_type == "cuda"
    return torch.amp.GradScaler(device_type, enabled=float16)


def make_lr_scheduler(optimizer, name, epochs, step_size, gamma):
    """StepLR (the tutorial: lr x ``gamma`` every ``step_size`` epochs) or cosine over ``epochs``."""
    if name == "cosineannealinglr":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
