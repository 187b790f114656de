"""Training and evaluation loops with torchvision's ``references/detection/engine.py`` API.

    from engine import train_one_epoch, evaluate

Same names, arguments, return values and log lines as the reference. Departures:

* a non-finite loss raises ``NonFiniteLossError`` naming the loss terms, the epoch and the
  iteration (the reference calls ``sys.exit(1)``, which callers cannot handle);
* mixed precision uses ``torch.autocast``/``torch.amp.GradScaler`` (no deprecated
  ``torch.cuda.amp`` calls) and works on CPU (bfloat16) as well as CUDA (float16);
* ``evaluate`` leaves the thread count alone (the reference forces one thread, which makes
  CPU evaluation several times slower) and accepts a prebuilt COCO ground truth so that a
  test set is converted once, not at every evaluation;
* all logged losses of an iteration reach the host in one copy (on CUDA each ``.item()``
  waits for the GPU); optional gradient clipping and a per-iteration loss history.

Needs only ``utils.py``, ``coco_utils.py`` and ``coco_eval.py`` beside it.
"""

import math
import time

import torch
import torchvision.models.detection as detection

import utils
from coco_eval import CocoEvaluator
from coco_utils import get_coco_api_from_dataset, image_id_as_int


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the message says which terms and where."""


def _to_device(images, targets, device):
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [
        {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in t.items()}
        for t in targets
    ]
    return images, targets


def autocast_dtype(device_type):
    """float16 on CUDA (paired with a GradScaler), bfloat16 elsewhere (no scaler needed)."""
    return torch.float16 if device_type == "cuda" else torch.bfloat16


def train_one_epoch(model, optimizer, data_loader, device, epoch, print_freq, scaler=None, *, loss_history=None,
                    clip_grad_norm=None, amp_dtype=None):
    """Train ``model`` for one pass over ``data_loader``; returns the ``MetricLogger``.

    Epoch 0 warms the learning rate up linearly from ``lr / 1000`` over
    ``min(1000, len(data_loader) - 1)`` iterations. Passing a ``torch.amp.GradScaler`` turns
    on mixed precision (autocast) for the forward pass, to ``amp_dtype`` (None:
    ``autocast_dtype(device.type)``; bfloat16 on CUDA goes with a disabled scaler).
    If ``loss_history`` is a list, one
    dict of per-iteration loss values is appended to it per step (for loss curves).
    ``clip_grad_norm`` clips the gradients' total norm before each step (off by default).
    """
    device = torch.device(device)
    model.train()
    metric_logger = utils.MetricLogger(delimiter="  ")
    metric_logger.add_meter("lr", utils.SmoothedValue(window_size=1, fmt="{value:.6f}"))
    header = f"Epoch: [{epoch}]"

    lr_scheduler = None
    if epoch == 0:
        warmup_iters = min(1000, len(data_loader) - 1)
        if warmup_iters > 0:
            lr_scheduler = torch.optim.lr_scheduler.LinearLR(
                optimizer, start_factor=1.0 / 1000, total_iters=warmup_iters
            )

    use_amp = scaler is not None
    dtype = amp_dtype if amp_dtype is not None else autocast_dtype(device.type)
    for iteration, (images, targets) in enumerate(metric_logger.log_every(data_loader, print_freq, header)):
        images, targets = _to_device(images, targets, device)
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=use_amp):
            loss_dict = model(images, targets)
            losses = sum(loss_dict.values())

        # average over processes for logging only; the backward pass uses the local loss
        loss_dict_reduced = utils.reduce_dict(loss_dict)
        losses_reduced = sum(loss_dict_reduced.values())
        # every number logged below in one device-to-host copy: on CUDA each .item() waits for the GPU
        logged = torch.stack([losses_reduced.detach().float()]
                             + [v.detach().float() for v in loss_dict_reduced.values()]).tolist()
        loss_value, loss_terms = logged[0], dict(zip(loss_dict_reduced, logged[1:]))
        if not math.isfinite(loss_value):
            terms = ", ".join(f"{k}={v:.4g}" for k, v in loss_terms.items())
            raise NonFiniteLossError(
                f"Loss is {loss_value} at epoch {epoch}, iteration {iteration}/{len(data_loader)} "
                f"({terms}); stopping training. Try a lower --lr, or train without --amp."
            )

        optimizer.zero_grad()
        if scaler is not None:
            scaler.scale(losses).backward()
            if clip_grad_norm is not None:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
        else:
            losses.backward()
            if clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
        if lr_scheduler is not None:
            lr_scheduler.step()

        metric_logger.update(loss=loss_value, **loss_terms)
        metric_logger.update(lr=optimizer.param_groups[0]["lr"])
        if loss_history is not None:
            loss_history.append(dict(loss_terms, loss=loss_value, epoch=epoch, iteration=iteration))
    return metric_logger


def _get_iou_types(model):
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    iou_types = ["bbox"]
    if isinstance(model, detection.MaskRCNN):
        iou_types.append("segm")
    if isinstance(model, detection.KeypointRCNN):
        iou_types.append("keypoints")
    return iou_types


@torch.inference_mode()
def evaluate(model, data_loader, device, *, coco_gt=None):
    """Run ``model`` over ``data_loader`` and score it with COCO metrics; returns the ``CocoEvaluator``.

    Prints ``Test:`` progress lines, ``Averaged stats: ...`` and the pycocotools tables
    (``IoU metric: bbox`` / ``IoU metric: segm``). ``coco_evaluator.coco_eval["bbox"].stats``
    holds the 12 COCO numbers. Pass ``coco_gt`` (from ``get_coco_api_from_dataset``) to reuse a
    ground truth built once; by default it is built from ``data_loader.dataset``.
    """
    device = torch.device(device)
    cpu_device = torch.device("cpu")
    model.eval()
    metric_logger = utils.MetricLogger(delimiter="  ")
    header = "Test:"

    if coco_gt is None:
        coco_gt = get_coco_api_from_dataset(data_loader.dataset)
    coco_evaluator = CocoEvaluator(coco_gt, _get_iou_types(model))

    for images, targets in metric_logger.log_every(data_loader, 100, header):
        images = [img.to(device, non_blocking=True) for img in images]
        if device.type == "cuda":
            torch.cuda.synchronize()
        model_time = time.time()
        outputs = model(images)
        outputs = [{k: v.to(cpu_device) if isinstance(v, torch.Tensor) else v for k, v in o.items()} for o in outputs]
        model_time = time.time() - model_time

        res = {image_id_as_int(target["image_id"]): output for target, output in zip(targets, outputs)}
        evaluator_time = time.time()
        coco_evaluator.update(res)
        evaluator_time = time.time() - evaluator_time
        metric_logger.update(model_time=model_time, evaluator_time=evaluator_time)

    metric_logger.synchronize_between_processes()
    print("Averaged stats:", metric_logger)
    coco_evaluator.synchronize_between_processes()
    coco_evaluator.accumulate()
    coco_evaluator.summarize()
    return coco_evaluator
