"""The command line checked before any work: flag values, the device, the output folder, and a
checkpoint's recipe against the flags typed with it.

A bad flag value is a usage line naming the flag and the accepted range (exit status 2, from
argparse); everything else here raises ``TutorialError`` (one line, exit status 1).
"""

import os

from finetune import hardware
from finetune.data.formats import check_test_data_path
from finetune.data.labelme import is_labelme_folder
from finetune.data.yolo import is_yolo_file
from finetune.errors import DatasetError, TutorialError
from finetune.hardware import pick_device
from finetune.models.specs import check_model_flag
from finetune.outputs.prediction import check_earlier_predictions
from finetune.outputs.writing import check_output_dir
from finetune.run.flags import flag
from finetune.run.run_folder import check_output_outside_data, protect_earlier_run


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
        check_model_flag(args.model if "model" in args.explicit else None, checkpoint["model_spec"]["model"],
                         weights_file)
    if args.test_only and checkpoint is None:
        print(f"warning: --test-only with --weights {args.weights}: the numbers are those of an untrained model "
              f"(new, random heads); pass --weights FILE (a checkpoint written by training) to score one.")
    on_gpu = pick_device(args.device).type == "cuda"
    if args.amp and training and not on_gpu and not hardware.cpu_has_bf16():
        print("warning: --amp on a CPU without bfloat16 instructions (avx512_bf16 or AMX): bfloat16 runs slower "
              "than float32 here; drop --amp.")
    if getattr(args, "eval_bf16", False):
        if on_gpu:
            print("warning: --eval-bf16 is for the CPU; evaluation on the GPU stays in float32.")
        elif not hardware.cpu_has_bf16():
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
                fix = ("the same classes in another order" if sorted(have) == sorted(trained) else
                       "a folder without some of its classes") + f": pass --classes {','.join(trained)}"
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
