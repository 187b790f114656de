"""The run's settings, settled once, before any work, on a copy of the parsed arguments:

1. the flags, as typed (``ExplicitArgumentParser`` records which were typed: ``explicit``), and
   ``check_combinations`` for those that cannot go together (a usage error, before ``main``);
2. under ``--demo``, the demo's recipe for every flag not typed (``apply_demo_recipe``);
3. with ``--resume``, the checkpoint's recipe for the flags not typed (a typed flag that
   contradicts it is an error), and its folder as ``--output-dir``; then ``check_run``;
4. once the data has been read: box-only data trains the tutorial's Faster R-CNN
   (``settle_for_data``; it needs the data, whose path steps 2 and 3 may set).

Each change is printed once, where it is made. The namespace is read and changed here only: the
checks of finetune/run/checks.py and flags.py take the values they need, and only raise or warn.
"""

import argparse
import os

import utils
from finetune import hardware
from finetune.data import augmentation, formats
from finetune.errors import TutorialError
from finetune.models import pretrained
from finetune.outputs import onnx_runtime, tensorboard
from finetune.run import checks, demo, flags

# Settings a checkpoint fixes for a resumed run: what shapes the model, the optimizer and the
# data it sees. Typed with another value, they would not continue the same run.
RECIPE = ("model", "demo", "opt", "lr", "momentum", "weight_decay", "lr_scheduler", "lr_step_size", "lr_gamma",
          "clip_grad_norm", "batch_size", "amp", "seed", "test_size", "train_size", "min_size", "max_size",
          "aspect_ratio_group_factor", "data_augmentation", "use_copypaste")


# Taken from the checkpoint unless typed: where its data was, how it was read (a labelme folder's
# class order), how far it was to go, and its loader workers (each draws its own random flips);
# --amp-dtype (another GPU may need another) and --tensorboard.
DEFAULTED = ("data_path", "test_data_path", "image_dir", "classes", "skip_missing_images", "crowd_as_objects",
             "epochs", "workers", "amp_dtype", "tensorboard")


# --test-only with a checkpoint, unless typed: the data and split it was trained and tested on.
TESTED_ON = ("data_path", "test_data_path", "image_dir", "classes", "skip_missing_images", "crowd_as_objects",
             "seed", "test_size", "train_size")


class ExplicitArgumentParser(argparse.ArgumentParser):
    """Records which options were typed (``args.explicit``), so the demo's and a checkpoint's
    recipes change only the others."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        saved = {a: a.default for a in self._actions}
        try:  # parse once more with every default suppressed: only typed options remain
            for action in self._actions:
                action.default = argparse.SUPPRESS
            typed, _ = super().parse_known_args(args, None)
        finally:
            for action, default in saved.items():
                action.default = default
        namespace.explicit = sorted(vars(typed))
        return namespace, extras


def task(args):
    """What the flags ask the run to do (``flags.Task``): train, test, predict, check or export."""
    return flags.Task(args.weights, args.resume, args.test_only, args.predict, args.check_forward, args.export)


def is_training(args):
    return task(args).training


def typed_model(args):
    """``--model`` as typed, None when it was not (a checkpoint then says which model it is)."""
    return args.model if "model" in args.explicit else None


def check_combinations(parser, args):
    """Step 1: flag values that are fine alone but not together are ``parser``'s usage error (exit status 2)."""
    message = flags.combination_error(task(args), args.epochs, args.min_size, args.max_size)
    if not args.resume:  # resumed, the checkpoint's preset counts (checked in settle)
        message = message or flags.augmentation_error(args.data_augmentation, args.use_copypaste)
    message = message or weights_flags_error(args)
    if message:
        parser.error(message)


def weights_flags_error(args):
    """One line for ``--weights``, ``--weights-backbone`` or ``--trainable-backbone-layers`` that
    does not fit ``--model`` (``pretrained.weights_error``, ``trainable_layers_error``); None when they fit."""
    backbone = None if pretrained.is_random_init(args.weights_backbone) else args.weights_backbone
    return pretrained.weights_error(args.model, args.weights) or \
        (backbone and pretrained.weights_error(args.model, backbone, "--weights-backbone")) or \
        pretrained.trainable_layers_error(args.model, args.trainable_backbone_layers, args.weights, backbone)


def apply_demo_recipe(run):
    """Step 2: under ``--demo``, every flag not typed on the command line takes the demo's value
    (``demo.demo_values``: ``--amp``, bfloat16, where it trains on a CPU with bfloat16
    instructions; ``--no-amp`` turns it off). Changes ``run`` and returns it."""
    for key, value in demo.demo_values(run.explicit, run.device).items():
        setattr(run, key, value)
    if utils.is_main_process() and not (run.predict or run.test_only):
        precision = "bfloat16 autocast" if run.amp else "float32"
        print(f"Demo: data in {run.data_path}, --model {run.model}, --weights {run.weights}, "
              f"{run.opt} lr {run.lr}, {run.epochs} epochs, {precision} (docs/demo.md)")
    return run


def take_recipe(args, checkpoint, path, keys=RECIPE, defaulted=DEFAULTED):
    """Set ``args`` to the checkpoint's recipe; a typed flag that differs is an error naming both.

    Prints one line naming what was taken from the checkpoint (where it differs from the flags'
    values). Checkpoints written before a setting existed keep the flag's value.
    """
    trained = checkpoint.get("args", {})
    typed = set(args.explicit)
    taken = []
    for key in keys + defaulted:
        if key not in trained:
            continue
        value = formats.saved_path(trained, key) if key in formats.DATA_PATH_KEYS else trained[key]
        if value == getattr(args, key):
            continue
        if key in typed:
            if key in defaulted:
                continue
            checks.contradicts_checkpoint(key, getattr(args, key), value, path)
        setattr(args, key, value)
        taken.append(flags.flag(key, value))
    if taken:
        print(f"From {path}: {', '.join(taken)}")
    return args


def settle(args, load_checkpoint):
    """Steps 2-3 above, then every check that needs no data; returns ``(settings, checkpoint)``.

    ``load_checkpoint(path)``: the weights file's contents (``pretrained.load_weights_file``).
    The process group is set up here too (``utils.init_distributed_mode``: rank, world size,
    GPU), as torchvision's train.py does first. ``checkpoint`` is None without a weights file,
    and for ``--export`` and ``--predict`` with an .onnx model, which read their file themselves.
    """
    run = argparse.Namespace(**vars(args))
    utils.init_distributed_mode(run)
    if run.demo:
        apply_demo_recipe(run)
    # again with --demo's values (its --weights none), and for main(args) called without cli()'s check
    message = weights_flags_error(run)
    if message:
        raise TutorialError(message.replace("argument ", "", 1) + (" (--demo trains from --weights none)"
                                                                    if run.demo and "weights" not in run.explicit
                                                                    else ""))
    if run.export or (run.predict and onnx_runtime.is_onnx_model(run.weights)):
        return run, None
    hardware.check_device(run.device)
    path = pretrained.weights_file(run.weights, run.resume)
    checkpoint = load_checkpoint(path) if path else None
    if run.resume and is_training(run):
        checks.check_resumable(run.resume, checkpoint)
        take_recipe(run, checkpoint, run.resume)
        mismatch = flags.augmentation_error(run.data_augmentation, run.use_copypaste)  # a checkpoint older than them
        if mismatch:
            raise TutorialError(f"{run.resume}: {mismatch}")
        if "output_dir" not in run.explicit:  # continue in the folder the run is in now
            run.output_dir = os.path.dirname(run.resume) or "."
            print(f"Continuing in --output-dir {run.output_dir}")
    elif run.test_only and isinstance(checkpoint, dict) and isinstance(checkpoint.get("args"), dict):
        # scored on the test split it was trained with (its data, seed and sizes), unless typed
        take_recipe(run, checkpoint, path, keys=(), defaulted=TESTED_ON)
    check_run(run, checkpoint, path, load_checkpoint)
    if not utils.is_main_process():
        run.output_dir = ""  # under torchrun, rank 0 alone writes the run's files
    return run, checkpoint


def check_run(run, checkpoint, path, load_checkpoint):
    """Everything about the settled flags that can be checked before any data is read or
    generated, in this order: ``--predict`` has a checkpoint; the folders (``checks.check_folders``);
    ``--model`` against the checkpoint of ``path``; then warnings about bfloat16 and --test-size."""
    todo, main_process = task(run), utils.is_main_process()
    checks.check_predict_weights(todo, checkpoint)
    checks.check_folders(todo, run.data_path, run.test_data_path, run.output_dir, run.overwrite, load_checkpoint,
                         main_process)
    checks.check_checkpoint_use(todo, checkpoint, path, typed_model(run))
    checks.warn_bfloat16(run.device, run.amp, run.eval_bf16, todo.training)
    hardware.note_precision(run.device, run.amp, run.amp_dtype, todo.training, main_process)  # --amp-dtype
    hardware.note_device(run.device, main_process)  # mps: what its CPU fallback does
    tensorboard.check_tensorboard(run.tensorboard, todo.training, run.output_dir)
    checks.note_test_size(run.test_data_path, run.test_size, "test_size" in run.explicit, todo.training)


def test_image_names(dataset_test):
    """The test images' file names, in order: what a resumed run must be tested on again."""
    base, where = utils.unwrap_subset(dataset_test)
    names = getattr(base, "imgs", None)
    return [names[i] for i in where] if names is not None else None


def settle_for_data(run, data, checkpoint=None):
    """Step 4, once ``data`` (``formats.load_datasets``' dict) is read: box-only data (no
    annotation has a segmentation) trains the tutorial's Faster R-CNN, unless a mask model was
    asked for (an error then, as are a checkpoint trained on other classes and fewer training
    images than one batch). Returns ``run``, with ``model`` changed where it falls back."""
    if is_training(run):
        checks.check_objects_to_learn(run.data_path, data["train"])
        # kept in the checkpoint's arguments
        run.test_images = test_image_names(data["test"]) if data.get("test") is not None else None
        if run.resume:
            checks.check_same_test_images(run.data_path, checkpoint.get("args", {}).get("test_images"),
                                          run.test_images, run.resume)
    box_only = checks.check_model_for_data(run.data_path, run.model, "model" in run.explicit or run.demo,
                                           data["has_masks"], data["classes"], checkpoint,
                                           run.resume or run.weights) == "box-only"
    checks.check_batch_fits(run.data_path, len(data["train"]), run.batch_size)
    augmentation.check_copy_paste(run.data_path, run.use_copypaste, data["has_masks"])
    if box_only:
        print(f"{run.data_path}: no annotation has a segmentation: training the tutorial's box-only Faster R-CNN "
              f"(--model fasterrcnn) instead of Mask R-CNN")
        run.model = "fasterrcnn"
    return run


def recipe(trained_args):
    """The recipe (``RECIPE`` but the model's name and --demo) of a run's arguments, as a dict."""
    trained_args = trained_args if isinstance(trained_args, dict) else vars(trained_args)
    return {k: trained_args.get(k) for k in RECIPE if k not in ("model", "demo")}


def report_info(run, checkpoint, classes, model_name, device, num_test_images):
    """``report.run_info``'s arguments for this run (a training run adds its records at the end).
    ``--test-only`` reports the recipe and epochs of the checkpoint that made the model."""
    saved = checkpoint if run.test_only and isinstance(checkpoint, dict) else {}
    trained = saved.get("args") if isinstance(saved.get("args"), dict) else run
    info = dict(data_path=run.data_path, test_data_path=run.test_data_path, classes=classes, model_name=model_name,
                recipe=recipe(trained), device=device, weights=run.resume or (run.weights if run.test_only else None),
                num_test_images=num_test_images)
    if run.test_only:
        info["records"] = saved.get("records")
    return info
