"""The settled flags (``settings.settle``' namespace) turned into the plain values each step of
``tv_training.main`` takes: besides settings.py, the only module that reads the namespace."""

import functools
from typing import NamedTuple

from finetune import hardware
from finetune.data import augmentation
from finetune.data.coco import ReadOptions
from finetune.models import pretrained
from finetune.run import checkpoints, checks, optim, settings, training


class PredictionOptions(NamedTuple):
    """``--predict``'s: where (``output_dir/predict``), the lowest score drawn, whether an earlier
    result may be replaced, the device and speed-ups, and ``--model`` if typed (else None)."""

    output_dir: str = ""
    score_threshold: float = 0.5
    overwrite: bool = False
    device: str = "auto"
    eval_bf16: bool = False
    channels_last: str = "auto"
    typed_model: str | None = None


class EvaluationOptions(NamedTuple):
    """``--test-only``'s: the report's folder and facts (``report_info``: ``report.run_info``'s
    arguments), its figures' lowest score, and the speed-ups."""

    output_dir: str = ""
    report_info: dict | None = None
    score_threshold: float = 0.5
    eval_bf16: bool = False
    channels_last: str = "auto"


def data_transform(args, tutorial_transform):
    """The datasets' ``get_transform(train)``: the tutorial's (``tutorial_transform``) for
    ``--data-augmentation hflip``, else the preset's at the run's --min-size/--max-size."""
    if args.data_augmentation == "hflip":
        return tutorial_transform
    return functools.partial(augmentation.get_transform, preset=args.data_augmentation, min_size=args.min_size,
                             max_size=args.max_size)


def model_builder(args, build_model):
    """``build_model`` (tv_training's) with the model flags filled in: call it with
    ``(classes, device, checkpoint)``."""
    weights_backbone = pretrained.backbone_enum_name(args.model, args.weights_backbone)
    backbone = {k: v for k, v in (("weights_backbone", weights_backbone),
                                  ("trainable_backbone_layers", args.trainable_backbone_layers)) if v is not None}
    return functools.partial(build_model, args.model, args.weights, min_size=args.min_size, max_size=args.max_size,
                             demo_settings=args.demo, channels_last=args.channels_last, backbone=backbone)


def read_options(args):
    """How own data is read (``coco.ReadOptions``): missing images, crowd regions, and whether the
    model trains masks (a box-only one hears nothing of boxes used as masks)."""
    return ReadOptions(args.skip_missing_images, args.crowd_as_objects, args.model in checks.MASK_MODELS)


def prediction_options(args):
    return PredictionOptions(args.output_dir, args.score_threshold, args.overwrite, args.device, args.eval_bf16,
                             args.channels_last, settings.typed_model(args))


def evaluation_options(args, report_info):
    return EvaluationOptions(args.output_dir, report_info, args.score_threshold, args.eval_bf16, args.channels_last)


def training_run(args, checkpoint, data, spec, report_info, trainer, sampling):
    """The ``TrainingRun`` that ``tv_training.train`` carries along: the GradScaler for ``--amp``,
    the state ``--resume`` restores into ``trainer`` (optimizer, lr scheduler, device), and what
    the run writes. ``data``: ``load_datasets``' dict; ``sampling``: ``training.Sampling``."""
    optimizer, lr_scheduler, device = trainer
    amp_dtype = hardware.amp_dtype(device, args.amp_dtype) if args.amp else None
    scaler = optim.make_grad_scaler(device, args.amp, amp_dtype)
    start_epoch, records = checkpoints.resume(checkpoint, args.resume, args.epochs, optimizer, lr_scheduler, scaler)
    evaluation = training.Evaluation(data["coco_gt"], data["classes"], args.eval_bf16, args.channels_last)
    saving = training.Saving(args.output_dir, dict(vars(args)), spec, args.best_metric, args.score_threshold,
                             (args.data_path, data["preview"]), report_info, args.overwrite, args.resume,
                             args.tensorboard)
    options = training.EpochOptions(scaler, args.print_freq, args.clip_grad_norm, amp_dtype)
    return training.TrainingRun(sampling, evaluation, saving, options, start_epoch, records)
