"""The parts of a training run around the tutorial's loops: device, optimizer and lr schedule
from the flags, checkpoints and resuming, and the command that continues an interrupted run."""

import shlex

import torch

import utils


def pick_device(name, gpu=None):
    """``name``: "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N". Under
    torchrun with CUDA each process takes its own GPU (``gpu``, from ``init_distributed_mode``)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else torch.device(name)
    if gpu is not None and device.type == "cuda":
        device = torch.device("cuda", gpu)
    return device


def make_optimizer(model, opt, lr, momentum, weight_decay):
    """SGD (the tutorial's) or AdamW over the parameters that train."""
    params = [p for p in model.parameters() if p.requires_grad]
    if opt == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def make_lr_scheduler(optimizer, name, epochs, step_size, gamma):
    """StepLR (the tutorial: lr x ``gamma`` every ``step_size`` epochs) or cosine over ``epochs``."""
    if name == "cosineannealinglr":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)


def save_checkpoint(path, model, optimizer, lr_scheduler, scaler, epoch, args, records, model_spec):
    """Everything a resumed run needs, written atomically (rank 0 only)."""
    checkpoint = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": lr_scheduler.state_dict(),
        "epoch": epoch,
        "args": dict(vars(args)),  # a plain dict: weights_only=True loads it
        "model_spec": model_spec,
        "records": records,
    }
    if scaler is not None:
        checkpoint["scaler"] = scaler.state_dict()
    utils.save_on_master(checkpoint, path)


def restore_training_state(checkpoint, optimizer, lr_scheduler, scaler):
    """Load the optimizer, lr scheduler and scaler states; returns (next epoch, epoch records so far)."""
    optimizer.load_state_dict(checkpoint["optimizer"])
    lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
    if scaler is not None and "scaler" in checkpoint:
        scaler.load_state_dict(checkpoint["scaler"])
    start_epoch = checkpoint["epoch"] + 1
    return start_epoch, [r for r in checkpoint.get("records", []) if r["epoch"] < start_epoch]


def resume_command(argv, checkpoint):
    """The command line that continues an interrupted run: the same options plus --resume."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--resume":
            skip = True
        elif not arg.startswith("--resume="):
            kept.append(arg)
    return " ".join(shlex.quote(a) for a in ["python", "tv_training.py", *kept, "--resume", checkpoint])
