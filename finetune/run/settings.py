"""The run's settings, settled once, before any work, in this order:

1. the flags, as typed (``ExplicitArgumentParser`` records which were typed: ``explicit``);
2. under ``--demo``, the demo's recipe for every flag not typed (``demo.apply_demo_recipe``);
3. with ``--resume``, the checkpoint's recipe for the flags not typed (a typed flag that
   contradicts it is an error), and its folder as ``--output-dir``;
4. once the data has been read: box-only data trains the tutorial's Faster R-CNN
   (``settle_for_data``; it needs the data, whose path steps 2 and 3 may set).

Each change is printed once, where it is made. The functions of argument_checks.py only raise
or warn; the settled namespace is a copy, so the parsed ``args`` stay as typed.
"""

import argparse
import os

import utils
from finetune import hardware
from finetune.outputs import onnx_runtime
from finetune.run import checks, demo, flags

# Settings a checkpoint fixes for a resumed run: what shapes the model, the optimizer and the
# data it sees. Typed with another value, they would not continue the same run.
RECIPE = ("model", "demo", "opt", "lr", "momentum", "weight_decay", "lr_scheduler", "lr_step_size", "lr_gamma",
          "clip_grad_norm", "batch_size", "amp", "seed", "test_size", "train_size", "min_size", "max_size",
          "aspect_ratio_group_factor")


# Taken from the checkpoint unless typed: where its data was, how it was read (a labelme folder's
# class order), how far it was to go, and its loader workers (each draws its own random flips).
DEFAULTED = ("data_path", "test_data_path", "image_dir", "classes", "epochs", "workers")


# --test-only with a checkpoint, unless typed: the data and split it was trained and tested on.
TESTED_ON = ("data_path", "test_data_path", "image_dir", "classes", "seed", "test_size", "train_size")


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


def weights_file(args):
    """The checkpoint a run reads: ``--resume``, or ``--weights`` when it names a file."""
    return args.resume or (args.weights if str(args.weights) not in ("DEFAULT", "none", "None") else None)


def is_training(args):
    return not (args.test_only or args.predict or args.check_forward or getattr(args, "export", None))


def take_recipe(args, checkpoint, path, keys=RECIPE, defaulted=DEFAULTED):
    """Set ``args`` to the checkpoint's recipe; a typed flag that differs is an error naming both.

    Prints one line naming what was taken from the checkpoint (where it differs from the flags'
    values). Checkpoints written before a setting existed keep the flag's value.
    """
    trained = checkpoint.get("args", {})
    typed = set(getattr(args, "explicit", ()))
    taken = []
    for key in keys + defaulted:
        if key not in trained or trained[key] == getattr(args, key):
            continue
        if key in typed:
            if key in defaulted:
                continue
            checks.contradicts_checkpoint(key, getattr(args, key), trained[key], path)
        setattr(args, key, trained[key])
        taken.append(flags.flag(key, trained[key]))
    if taken:
        print(f"From {path}: {', '.join(taken)}")
    return args


def settle(args, defaults, load_checkpoint):
    """Steps 1-3 above, then every check that needs no data; returns ``(settings, checkpoint)``.

    ``defaults``: the parser (its defaults tell typed flags from others when ``args`` has no
    ``explicit``); ``load_checkpoint(path)``: the weights file's contents (model_weights.py).
    The process group is set up here too (``utils.init_distributed_mode``: rank, world size,
    GPU), as torchvision's train.py does first. ``checkpoint`` is None without a weights file,
    and for ``--export`` and ``--predict`` with an .onnx model, which read their file themselves.
    """
    run = argparse.Namespace(**vars(args))
    utils.init_distributed_mode(run)
    if run.demo:
        demo.apply_demo_recipe(run, defaults)
    if run.export or (run.predict and onnx_runtime.is_onnx_model(run.weights)):
        return run, None
    hardware.check_device(run.device)
    path = weights_file(run)
    checkpoint = load_checkpoint(path) if path else None
    if run.resume and is_training(run):
        checks.check_resumable(run.resume, checkpoint)
        take_recipe(run, checkpoint, run.resume)
        if "output_dir" not in getattr(run, "explicit", ()):  # continue in the folder the run is in now
            run.output_dir = os.path.dirname(run.resume) or "."
            print(f"Continuing in --output-dir {run.output_dir}")
    elif run.test_only and isinstance(checkpoint, dict) and isinstance(checkpoint.get("args"), dict):
        # scored on the test split it was trained with (its data, seed and sizes), unless typed
        take_recipe(run, checkpoint, path, keys=(), defaulted=TESTED_ON)
    checks.check_run(run, checkpoint, path, load_checkpoint, is_training(run), utils.is_main_process())
    if not utils.is_main_process():
        run.output_dir = ""  # under torchrun, rank 0 alone writes the run's files
    return run, checkpoint


def test_image_names(dataset_test):
    """The test images' file names, in order: what a resumed run must be tested on again."""

    base, where = utils.unwrap_subset(dataset_test)
    names = getattr(base, "imgs", None)
    return [names[i] for i in where] if names is not None else None


def settle_for_data(run, data, checkpoint=None):
    """Step 4, once ``data`` (dataset_formats.load_datasets' dict) is read: box-only data (no
    annotation has a segmentation) trains the tutorial's Faster R-CNN, unless a mask model was
    asked for (an error then, as are a checkpoint trained on other classes and fewer training
    images than one batch). Returns ``run``, with ``model`` changed where it falls back."""
    if is_training(run):
        checks.check_objects_to_learn(run.data_path, data["train"])
        # kept in the checkpoint's arguments
        run.test_images = test_image_names(data["test"]) if data.get("test") is not None else None
        if run.resume and isinstance(checkpoint, dict):
            checks.check_same_test_images(run.data_path, checkpoint.get("args", {}).get("test_images"),
                                          run.test_images, run.resume)
    box_only = checks.check_model_for_data(run, data["has_masks"], data["classes"], checkpoint) == "box-only"
    checks.check_batch_fits(run.data_path, len(data["train"]), run.batch_size)
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
