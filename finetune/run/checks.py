"""The run's settled flags checked before any work (settings.py calls these with the values they
need): its checkpoint, its output folder, the device's bfloat16 support, then the data against the
model. They only raise ``TutorialError`` (one line, exit status 1) or print a warning."""

import os

from finetune import hardware
from finetune.data.formats import check_test_data_path
from finetune.data.labelme import is_labelme_folder
from finetune.data.voc import is_voc_folder
from finetune.data.yolo import is_yolo_file
from finetune.errors import DatasetError, TutorialError
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


def check_predict_weights(task, checkpoint):
    """``--predict`` runs a trained model: a checkpoint."""
    if task.predict and checkpoint is None:
        raise TutorialError("--predict needs trained weights: --weights FILE (e.g. output/checkpoint.pth).")


def check_folders(task, data_path, test_data_path, output_dir, overwrite, load_checkpoint, is_main_process=True):
    """The run's folders, before any data is read or generated (and Penn-Fudan downloaded for a
    ``test_data_path`` that would go unread).

    The output folder can be written, is not inside the dataset's folders and holds no other run
    (unless ``overwrite``: main clears that run's files later; ``load_checkpoint`` reads the
    earlier run's checkpoint to describe it); ``--predict`` has a folder to write to. Under
    torchrun only the main process (``is_main_process``) writes, so only it checks the folders.
    """
    if not task.predict:
        check_test_data_path(data_path, test_data_path)
    if output_dir and is_main_process:
        check_output_outside_data(output_dir, data_path)
        check_output_dir(output_dir)
        if task.training:  # --overwrite removes the earlier run only once the data has passed its checks too
            protect_earlier_run(output_dir, task.resume, overwrite, load_checkpoint)
    if task.predict and is_main_process:
        predict_dir = os.path.join(output_dir or ".", "predict")
        check_output_dir(predict_dir)
        check_earlier_predictions(predict_dir, overwrite)


def check_checkpoint_use(task, checkpoint, weights_file, typed_model=None):
    """``--model`` as typed (``typed_model``; None: not typed) agrees with the checkpoint of
    ``weights_file`` given to ``--test-only``/``--predict``; evaluating random weights is warned about."""
    if checkpoint is not None and "model_spec" in checkpoint and not (task.resume and task.training):
        check_model_flag(typed_model, checkpoint["model_spec"]["model"], weights_file)
    if task.test_only and checkpoint is None:
        print(f"warning: --test-only with --weights {task.weights}: the numbers are those of an untrained model "
              f"(new, random heads); pass --weights FILE (a checkpoint written by training) to score one.")


def warn_bfloat16(device, amp, eval_bf16, training):
    """bfloat16 asked for where it does not help, on ``device`` (``--device``): ``amp`` for
    ``training``, or ``eval_bf16``, on a CPU without bfloat16 instructions; ``eval_bf16`` on a GPU."""
    kind = hardware.pick_device(device).type
    on_gpu = kind != "cpu"  # CUDA or Apple's MPS: the CPU's instructions do not matter
    if amp and training and not on_gpu and not hardware.cpu_has_bf16():
        print("warning: --amp on a CPU without bfloat16 instructions (avx512_bf16 or AMX): bfloat16 runs slower "
              "than float32 here; drop --amp.")
    if eval_bf16:
        if on_gpu:
            print(f"warning: --eval-bf16 is for the CPU; evaluation on {kind} stays in float32.")
        elif not hardware.cpu_has_bf16():
            print("warning: --eval-bf16 on a CPU without bfloat16 instructions (avx512_bf16 or AMX): bfloat16 runs "
                  "slower than float32 here; drop --eval-bf16.")


def note_test_size(test_data_path, test_size, test_size_typed, training):
    """A typed ``--test-size`` (``test_size_typed``) that ``--test-data-path`` makes moot is warned
    about; training on every image (``--test-size 0``) is said."""
    if test_data_path and test_size_typed:
        print(f"warning: --test-size {test_size} is ignored: the test images are those of --test-data-path.")
    elif training and test_size == 0:
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


MASK_MODELS = ("maskrcnn", "maskrcnn_resnet18", "maskrcnn_v2")


def check_model_for_data(data_path, model, model_asked, has_masks, classes, checkpoint=None, checkpoint_path=None):
    """The model fits the data: the classes of ``checkpoint`` (read from ``checkpoint_path``) are the
    data's ``classes``; box-only data (not ``has_masks``: no annotation has a segmentation) cannot
    train a mask ``model`` that was asked for (``model_asked``: typed, or the demo's). Returns
    "box-only" where the tutorial's Faster R-CNN should take the place of the default Mask R-CNN
    (settings.settle_for_data does it)."""
    if checkpoint is not None and "model_spec" in checkpoint:
        trained = [c["name"] for c in checkpoint["model_spec"]["classes"]]
        if trained != [c["name"] for c in classes]:
            fix, have = "evaluate or continue it on data with the same categories", [c["name"] for c in classes]
            named_by_objects = is_labelme_folder(data_path) or is_voc_folder(data_path)
            if named_by_objects and set(have) <= set(trained):  # labels come sorted, found ones only
                fix = ("the same classes in another order" if sorted(have) == sorted(trained) else
                       "a folder without some of its classes") + f": pass --classes {','.join(trained)}"
            elif sorted(have) == sorted(trained):
                fix = f"the same classes in another order: list them in the order {trained} in " + \
                    ("the YAML's names" if is_yolo_file(data_path) else "the file's categories")
            raise TutorialError(f"{checkpoint_path} was trained on the classes {trained}, but "
                                f"{data_path} has {[c['name'] for c in classes]}; {fix}.")
        return None
    if has_masks or model not in MASK_MODELS:
        return None
    if model_asked:
        raise TutorialError(f"{data_path}: no annotation has a segmentation, so there is no mask to train "
                            f"--model {model} on; use --model fasterrcnn (boxes only).")
    return "box-only"
