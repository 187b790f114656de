"""A training run's checkpoints: checkpoint.pth (everything ``--resume`` needs) and best.pth
(the best epoch's model), written atomically, and the training state restored from one."""

import os

import torch

import utils


def _plain(settings):
    """The run's settings as a plain dict (weights_only=True loads it), from a dict or a Namespace,
    with the folder its relative paths start from (``working_dir``: ``formats.saved_path``)."""
    plain = dict(settings if isinstance(settings, dict) else vars(settings))
    plain["working_dir"] = os.getcwd()
    return plain


def save_checkpoint(path, model, optimizer, lr_scheduler, scaler, epoch, run_args, records, model_spec):
    """Everything a resumed run needs, written atomically (rank 0 only). ``run_args``: the run's
    settings (a dict or argparse.Namespace), saved as ``args``, whose recipe a resumed run takes."""
    checkpoint = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": lr_scheduler.state_dict(),
        "epoch": epoch,
        "args": _plain(run_args),
        "model_spec": model_spec,
        "records": records,
    }
    if scaler is not None:
        checkpoint["scaler"] = scaler.state_dict()
    utils.save_on_master(checkpoint, path)


def best_metric_value(record, metric):
    """The number ``metric`` ("bbox", "bbox50", "segm", "segm50") picks from an epoch's record, or None."""
    iou, stat = (metric[:-2], "AP50") if metric.endswith("50") else (metric, "AP")
    return record[iou][stat] if iou in record else None


def save_if_best(path, records, metric, model, model_spec, run_args):
    """Write ``path`` (model, classes, arguments, epoch, metric; no optimizer state) when the last
    epoch of ``records`` beats every earlier one on ``metric`` ("auto": segm AP for mask models,
    bbox AP otherwise); a tie keeps the earlier epoch. Earlier epochs come from ``records``, so a
    resumed run keeps track of the best so far. ``run_args``: the run's settings (a dict or
    argparse.Namespace), saved as ``args``. Returns True when it wrote."""
    if metric == "auto":
        metric = "segm" if "segm" in records[-1] else "bbox"
    values = [best_metric_value(r, metric) for r in records]
    if values[-1] is None or any(v is not None and v >= values[-1] for v in values[:-1]):
        return False
    utils.save_on_master(dict(model=model.state_dict(), model_spec=model_spec, args=_plain(run_args),
                              epoch=records[-1]["epoch"], metric=metric, value=values[-1]), path)
    name = f"{metric[:-2]} AP50" if metric.endswith("50") else f"{metric} AP"
    print(f"New best {name} {values[-1]:.4f} at epoch {records[-1]['epoch']}: saved {path}")
    return True


def restore_training_state(checkpoint, optimizer, lr_scheduler, scaler):
    """Load the optimizer, lr scheduler and scaler states; returns (next epoch, epoch records so far).

    Moment buffers take their parameter's memory layout: a checkpoint written on the CPU holds
    them channels_last (the CPU default), and fused AdamW on CUDA refuses buffers whose strides
    differ from their NCHW parameters' (and the reverse on the CPU only costs copies).
    """
    optimizer.load_state_dict(checkpoint["optimizer"])
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
    lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
    # a disabled scaler (CPU) saves an empty state, which an enabled one (CUDA) refuses to load
    if scaler is not None and scaler.is_enabled() and checkpoint.get("scaler"):
        scaler.load_state_dict(checkpoint["scaler"])
    start_epoch = checkpoint["epoch"] + 1
    return start_epoch, [r for r in checkpoint.get("records", []) if r["epoch"] < start_epoch]


def resume(checkpoint, path, epochs, optimizer, lr_scheduler, scaler):
    """``--resume path``: the training state of ``checkpoint`` restored (``restore_training_state``);
    returns (next epoch, records so far). ``(0, [])`` without ``path``: a checkpoint given as
    ``--weights`` starts a new run from its model weights (epoch 0, a new optimizer and schedule).
    A run that already reached ``epochs`` says so (the caller then trains nothing)."""
    if checkpoint is None or not path:
        return 0, []
    start_epoch, records = restore_training_state(checkpoint, optimizer, lr_scheduler, scaler)
    if start_epoch >= epochs:
        print(f"{path}: finished at epoch {start_epoch - 1}; raise --epochs to continue")
    else:
        print(f"Resumed from {path}: continuing at epoch {start_epoch}")
    return start_epoch, records
