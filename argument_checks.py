"""The command line checked before any work: flag values, the device, the output folder, and a
checkpoint's recipe against the flags typed with it.

A bad flag value is a usage line naming the flag and the accepted range (exit status 2, from
argparse); everything else here raises ``TutorialError`` (one line, exit status 1).
"""

import argparse
import math
import os
import tempfile

import torch

from errors import DatasetError, TutorialError
from labelme_yolo import is_labelme_folder, is_yolo_file, read_yolo_yaml
from outputs import check_earlier_predictions
from training_run import pick_device


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


def read_cpuinfo(cpuinfo="/proc/cpuinfo"):
    """The first CPU's model name and flags in ``cpuinfo``: ``(name, [flag, ...])``, None for a
    line the file lacks (e.g. no "flags" on ARM); raises OSError where there is no such file."""
    with open(cpuinfo) as f:
        lines = f.read().splitlines()
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), None)
    return name, flags


def cpu_has_bf16(cpuinfo="/proc/cpuinfo"):
    """Whether this CPU has bfloat16 instructions (avx512_bf16, or AMX); True where it cannot tell."""
    try:
        _, flags = read_cpuinfo(cpuinfo)
    except OSError:
        return True
    return flags is None or any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


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


def check_device(name):
    """``--device`` exists here; names what is available otherwise."""
    if name == "auto":
        return
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise TutorialError(f"--device {name}: no CUDA GPU is available here (torch {torch.__version__}, "
                                f"CUDA build: {torch.version.cuda or 'none'}); use --device cpu or auto.")
        if device.index is not None and device.index >= count:
            raise TutorialError(f"--device {name}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}.")
    elif device.type != "cpu":
        backend = getattr(torch.backends, device.type, None)
        if backend is None or not getattr(backend, "is_available", lambda: False)():
            raise TutorialError(f"--device {name}: not available here; use --device cpu, cuda or auto.")


def check_output_dir(path):
    """``path`` can be created and written (a test file is written and removed)."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise TutorialError(f"--output-dir {path}: cannot be created or written ({e.strerror or e}). "
                            f"Pick a folder you can write to.") from None


def describe_run(checkpoint):
    """'epoch 3 of 7, bbox AP 0.412' for a checkpoint of ours."""
    args, records = checkpoint.get("args", {}), checkpoint.get("records", [])
    text = f"epoch {checkpoint.get('epoch', '?')} of {args.get('epochs', '?')} (counting from 0)"
    last = records[-1] if records else {}
    scores = [f"{iou} AP {last[iou]['AP']:.3f}" for iou in ("bbox", "segm") if iou in last]
    return text + (", " + ", ".join(scores) if scores else "")


def earlier_run_files(output_dir, resume=None):
    """The files of an earlier training run in ``output_dir`` (none when ``resume`` continues it)."""
    ckpt_path = os.path.join(output_dir, "checkpoint.pth")
    if not (os.path.exists(ckpt_path) or os.path.exists(os.path.join(output_dir, "metrics.json"))):
        return []
    if resume and os.path.exists(ckpt_path) and os.path.exists(resume) and os.path.samefile(resume, ckpt_path):
        return []  # continuing this very run
    return [p for p in (os.path.join(output_dir, name) for name in
                        ("checkpoint.pth", "metrics.json", "curves.png", "preview.png", "best.pth"))
            if os.path.exists(p)]


def protect_earlier_run(output_dir, resume, overwrite, load_checkpoint):
    """A training run must not overwrite another run's checkpoint without being told to.

    Returns the files ``--overwrite`` will clear (the earlier run's outputs); ``clear_earlier_run``
    removes them, once everything else about the new run has been checked.
    """
    files = earlier_run_files(output_dir, resume)
    if not files or overwrite:
        return files
    ckpt_path = os.path.join(output_dir, "checkpoint.pth")
    try:
        what = describe_run(load_checkpoint(ckpt_path)) if os.path.exists(ckpt_path) else "metrics.json"
    except TutorialError:
        what = "a checkpoint that does not load"
    raise TutorialError(f"{output_dir}/ already holds a run ({what}). Continue it with --resume {ckpt_path}, "
                        f"keep it with another --output-dir, or replace it with --overwrite.")


def clear_earlier_run(output_dir, resume=None):
    """``--overwrite``: remove the earlier run's files (``earlier_run_files``) and its figures of
    the test images just before training; its report joins the earlier ones (report/earlier/)."""
    files = earlier_run_files(output_dir, resume)
    for path in files:
        os.remove(path)
    if files:  # else a run without a test set (--test-size 0) would leave the replaced run's as its own
        import shutil

        from report import archive_report

        shutil.rmtree(os.path.join(output_dir, "predictions"), ignore_errors=True)
        archive_report(output_dir)


def check_output_outside_data(output_dir, data_path):
    """The outputs must not land among a dataset's files: a PNG written into Penn-Fudan's PNGImages/
    or PedMasks/ would be taken for an image or a mask by every later run (their subfolders are
    never read); labelme folders and YOLO split folders are read with their subfolders."""
    out, folder = os.path.realpath(output_dir), os.path.realpath(data_path)
    if is_yolo_file(data_path):  # its split folders are searched for images, subfolders too
        import contextlib
        import io

        try:
            with contextlib.redirect_stdout(io.StringIO()):  # its notes are printed when the data is read
                splits = read_yolo_yaml(data_path)[1]
        except DatasetError:
            return  # said in one line when the data is read
        for key, entries in splits.items():
            for entry in entries:
                place = os.path.realpath(entry)
                if os.path.isdir(entry) and os.path.commonpath([out, place]) == place:
                    raise TutorialError(f"--output-dir {output_dir}: inside {entry}, the {key} images of {data_path}, "
                                        f"whose subfolders are read too (the figures would be taken for images). "
                                        f"Pick a folder outside it.")
        return
    if str(data_path).lower().endswith(".json"):
        return  # a COCO file lists its images: other files beside them are never read
    if is_labelme_folder(data_path) and os.path.commonpath([out, folder]) == folder:
        raise TutorialError(f"--output-dir {output_dir}: inside the labelme folder {data_path}, whose subfolders are "
                            f"read too (the figures would be taken for unannotated images). Pick a folder outside it.")
    out = os.path.realpath(output_dir)
    for sub in ("PNGImages", "PedMasks"):
        folder = os.path.realpath(os.path.join(data_path, sub))
        if out == folder:
            raise TutorialError(f"--output-dir {output_dir}: inside the dataset's {sub}/ folder, where the figures "
                                f"would be read as {'images' if sub == 'PNGImages' else 'masks'} by later runs. Pick "
                                f"a folder outside {data_path}/{sub}.")


def flag(key, value=None):
    """The option as typed: ``--lr 0.1``; a switch alone (``--amp``), or negated (``--no-amp``)."""
    name = "--" + key.replace("_", "-")
    if isinstance(value, bool):
        return name if value else "--no-" + name[2:]
    if isinstance(value, (list, tuple)):  # --classes a,b,c
        value = ",".join(map(str, value))
    return name if value is None else f"{name} {value}"


def contradicts_checkpoint(key, typed, trained, path):
    """A flag typed with another value than the checkpoint to resume was trained with: an error naming both."""
    typed_flag = flag(key, typed)
    how = f"without {flag(key).split()[0]}" if trained is None else f"with {flag(key, trained)}"
    raise TutorialError(f"{typed_flag} contradicts {path}, which was trained {how}. "
                        f"Drop {typed_flag.split()[0]} to continue that run, or start a new one with another "
                        f"--output-dir.")


def check_resumable(path, checkpoint):
    """A checkpoint to ``--resume`` holds the training state, not only the model's weights."""
    missing = [k for k in ("optimizer", "lr_scheduler", "epoch") if k not in checkpoint]
    if missing:
        ours = os.path.join(os.path.dirname(path) or ".", "checkpoint.pth")
        raise TutorialError(f"--resume {path}: holds the model's weights but not the training state "
                            f"({missing[0]}), so a run cannot continue from it ({ours} can). To train these "
                            f"weights further as a new run: --weights {path} with another --output-dir.")


def check_model_flag(args, spec, path):
    """``--model`` typed with a checkpoint that holds another model is an error naming both."""
    if "model" in getattr(args, "explicit", ()) and args.model != spec["model"]:
        raise TutorialError(f"--model {args.model} contradicts {path}, which holds a {spec['model']} model. "
                            f"Drop --model: the checkpoint says which model it is.")


def check_run(args, checkpoint, weights_file, load_checkpoint, training, is_main_process=True):
    """Everything about a run's settled flags that can be checked before any data is read or generated.

    The output folder can be written, is not inside the dataset's folders and holds no other run
    (unless ``--overwrite``: main clears that run's files later; ``load_checkpoint`` reads the
    earlier run's checkpoint to describe it); ``--predict`` has a checkpoint and a folder to
    write to; ``--model`` agrees with a checkpoint given to ``--test-only``/``--predict``.
    Evaluating random weights, and flags that do nothing here, are warned about.
    """
    if args.predict and checkpoint is None:
        raise TutorialError("--predict needs trained weights: --weights FILE (e.g. output/checkpoint.pth).")
    if not args.predict:  # before Penn-Fudan is downloaded for a --test-data-path that would go unread
        from dataset_formats import check_test_data_path

        check_test_data_path(args.data_path, args.test_data_path)
    if args.output_dir and is_main_process:
        check_output_outside_data(args.output_dir, args.data_path)
        check_output_dir(args.output_dir)
        if training:  # --overwrite removes the earlier run only once the data has passed its checks too
            protect_earlier_run(args.output_dir, args.resume, args.overwrite, load_checkpoint)
    if args.predict and is_main_process:
        predict_dir = os.path.join(args.output_dir or ".", "predict")
        check_output_dir(predict_dir)
        check_earlier_predictions(predict_dir, args.overwrite)
    if checkpoint is not None and "model_spec" in checkpoint and not (args.resume and training):
        check_model_flag(args, checkpoint["model_spec"], weights_file)
    if args.test_only and checkpoint is None:
        print(f"warning: --test-only with --weights {args.weights}: the numbers are those of an untrained model "
              f"(new, random heads); pass --weights FILE (a checkpoint written by training) to score one.")
    on_gpu = pick_device(args.device).type == "cuda"
    if args.amp and training and not on_gpu and not cpu_has_bf16():
        print("warning: --amp on a CPU without bfloat16 instructions (avx512_bf16 or AMX): bfloat16 runs slower "
              "than float32 here; drop --amp.")
    if getattr(args, "eval_bf16", False):
        if on_gpu:
            print("warning: --eval-bf16 is for the CPU; evaluation on the GPU stays in float32.")
        elif not cpu_has_bf16():
            print("warning: --eval-bf16 on a CPU without bfloat16 instructions (avx512_bf16 or AMX): bfloat16 runs "
                  "slower than float32 here; drop --eval-bf16.")
    if args.test_data_path and "test_size" in getattr(args, "explicit", ()):
        print(f"warning: --test-size {args.test_size} is ignored: the test images are those of --test-data-path.")
    elif training and args.test_size == 0:
        print("--test-size 0: training on every image; no evaluation, so no COCO numbers or test figures.")


def check_batch_fits(data_path, num_train, batch_size):
    """At least one whole batch of training images (the training loader drops an incomplete one)."""
    if num_train < batch_size:
        raise DatasetError(f"{data_path}: {num_train} training image(s) is fewer than one batch (-b {batch_size}); "
                            f"lower --batch-size or --test-size.")


def check_same_test_images(data_path, before, now, checkpoint_path):
    """A resumed run is tested on the images its checkpoint was: a dataset with images added or
    removed reshuffles the seeded split, and images trained on would then be scored."""
    if before is None or now is None or list(before) == list(now):
        return
    gone, new = [n for n in before if n not in set(now)], [n for n in now if n not in set(before)]
    said = f" ({len(gone)} left it, e.g. {gone[0]}; {len(new)} joined, e.g. {new[0]})" if gone and new else ""
    raise DatasetError(f"{data_path}: its test images are not those {checkpoint_path} was tested on{said}: images "
                       f"were added or removed since, so the split changed and images trained on would be scored. "
                       f"Resume on the data as it was, or start a new run (--output-dir or --overwrite).")


def check_objects_to_learn(data_path, train_set):
    """Training images that hold no object at all: every image a negative, so nothing to learn and
    no score to expect (a filter, a label folder or a category list that missed)."""
    entries = getattr(train_set, "entries", None)  # CocoFormatDataset; Penn-Fudan's are checked by check_dataset
    if entries and not any(not a["iscrowd"] for e in entries for a in e["anns"]):
        raise DatasetError(f"{data_path}: none of its {len(entries)} training image(s) holds an object, so there is "
                           f"nothing to learn. Check the annotations (and --classes or --train-size).")


MASK_MODELS = ("maskrcnn", "maskrcnn_resnet18")


def check_model_for_data(args, has_masks, classes, checkpoint=None):
    """The model fits the data: a checkpoint's classes are the data's; box-only data (no annotation
    has a segmentation) cannot train a mask model that was asked for. Returns "box-only" where the
    tutorial's Faster R-CNN should take the place of the default Mask R-CNN (run_settings does it)."""
    if checkpoint is not None and "model_spec" in checkpoint and checkpoint["model_spec"].get("classes"):
        trained = [c["name"] for c in checkpoint["model_spec"]["classes"]]
        if trained != [c["name"] for c in classes]:
            fix, have = "evaluate or continue it on data with the same categories", [c["name"] for c in classes]
            if is_labelme_folder(args.data_path) and set(have) <= set(trained):  # labels come sorted, found ones only
                fix = (f"the same classes in another order" if sorted(have) == sorted(trained) else
                       f"a folder without some of its classes") + f": pass --classes {','.join(trained)}"
            elif sorted(have) == sorted(trained):
                fix = f"the same classes in another order: list them in the order {trained} in " + \
                    ("the YAML's names" if is_yolo_file(args.data_path) else "the file's categories")
            raise TutorialError(f"{args.resume or args.weights} was trained on the classes {trained}, but "
                                f"{args.data_path} has {[c['name'] for c in classes]}; {fix}.")
        return None
    if has_masks or args.model not in MASK_MODELS:
        return None
    if "model" in getattr(args, "explicit", ()) or args.demo:
        raise TutorialError(f"{args.data_path}: no annotation has a segmentation, so there is no mask to train "
                            f"--model {args.model} on; use --model fasterrcnn (boxes only).")
    return "box-only"
