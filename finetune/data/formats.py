"""The data of a run, whatever its format: ``prepare_data`` makes or downloads a missing dataset,
and ``load_datasets`` reads the train and test datasets of a Penn-Fudan folder
(``finetune.data.pennfudan``), a COCO file (``finetune.data.coco``), a labelme folder or a YOLO
data.yaml (``finetune.data.labelme``, ``finetune.data.yolo``: read into the COCO route), held
out as a ``DataSplit`` says.
"""

import os
from typing import NamedTuple

import torch

import utils
from coco_utils import get_coco_api_from_dataset
from finetune.data.coco import CocoFormatDataset, ReadOptions, coco_ground_truth, load_coco_images
from finetune.data.labelme import is_labelme_folder, read_labelme_folder, reads_as_labelme
from finetune.data.loaders import split_indices
from finetune.data.pennfudan import PENNFUDAN_CLASSES, check_dataset, download_pennfudan
from finetune.data.voc import is_voc_folder, load_voc
from finetune.data.yolo import is_yolo_file, read_yolo_split, read_yolo_yaml
from finetune.errors import DatasetError


def load_own_format(data_path, test_data_path=None, class_names=None, image_dir=None, reading=None):
    """Entries of a labelme folder, a YOLO data.yaml or a Pascal VOC folder (``finetune.data.voc``),
    as ``load_coco_images`` returns them.

    Returns ``((entries, classes, has_masks), test)``; ``test`` is the same triple for the test
    set (a YOLO val/test split, or ``test_data_path``: another labelme folder), or None for the
    seeded hold-out of ``--test-size`` images. ``reading``: ``coco.ReadOptions`` (None: its defaults).
    """
    reading = reading or ReadOptions()
    if is_voc_folder(data_path):  # a Pascal VOC folder (--image-dir: where its images are)
        return load_voc(data_path, test_data_path, class_names, image_dir, reading)
    if image_dir:
        raise DatasetError(f"--image-dir {image_dir}: applies to COCO files only; {data_path} says where its images "
                           f"are (labelme: imagePath beside each JSON; YOLO: the YAML's train/val folders).")
    if is_yolo_file(data_path):
        if class_names:
            raise DatasetError(f"--classes: applies to labelme folders only; {data_path} names its classes "
                               f"(\"names\"). Edit names there instead.")
        if test_data_path:
            raise DatasetError(f"--test-data-path {test_data_path}: a YOLO dataset's test set is its val split "
                               f"(or test); name it in {data_path} instead.")
        names, splits, root = read_yolo_yaml(data_path)
        train = load_coco_images(data_path, data=read_yolo_split(data_path, "train", splits["train"], names, root,
                                                                 reading.masks), reading=reading)
        held = "val" if "val" in splits else "test" if "test" in splits else None
        if held is None:
            print(f"note: {data_path}: no val or test split: holding out --test-size images of train")
            return train, None
        if held == "val" and "test" in splits:
            unread = ", ".join(os.path.relpath(p, root) for p in splits["test"])
            print(f"note: {data_path}: testing on its val split; its test split ({unread}) is not read")
        return train, load_coco_images(data_path, data=read_yolo_split(data_path, held, splits[held], names, root,
                                                                       reading.masks), reading=reading)
    train = load_coco_images(data_path, data=read_labelme_folder(data_path, class_names), reading=reading)
    if not test_data_path:
        return train, None
    if not is_labelme_folder(test_data_path):
        raise DatasetError(f"--test-data-path {test_data_path}: not a folder of labelme JSONs; with a labelme "
                           f"--data-path the test set is another labelme folder (or the --test-size hold-out).")
    # the test folder gets the training folder's classes, so labels 1..K mean the same in both
    names = class_names or [c["name"] for c in train[1]]
    why = "not in --classes" if class_names else f"not a label of {data_path}"
    return train, load_coco_images(test_data_path, data=read_labelme_folder(test_data_path, names, why),
                                   reading=reading)


def _holds_other_files(folder):
    """Whether ``folder`` holds anything but hidden entries and empty folders (such as the run's
    --output-dir, which the checks create before the data step)."""
    if not os.path.isdir(folder):
        return False
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if not name.startswith(".") and not (os.path.isdir(path) and not os.listdir(path)):
            return True
    return False


def prepare_data(root, make_synthetic=None):
    """Make sure ``root`` holds a dataset: ``make_synthetic(root)`` writes one (the demo), or a
    folder named ``PennFudanPed`` is downloaded; any other missing path is left for the checks
    to report (probably a typo).

    Under torchrun only rank 0 looks and writes; every rank then meets at the barrier (a
    rank deciding on its own could see rank 0's half-written folder and skip the wait).
    """
    if is_yolo_file(root):  # a YOLO data.yaml: your own data, nothing to make
        if not os.path.isfile(root):
            raise DatasetError(f"{root}: no such YOLO data file. Pass the data.yaml of your dataset.")
        return
    if is_labelme_folder(root) or is_voc_folder(root):  # labelme JSONs, VOC XMLs: your own data, never a place
        return  # for the demo's or a download
    if str(root).lower().endswith(".json"):  # a COCO file: your own data, nothing to make
        if not os.path.isfile(root):
            raise DatasetError(f"{root}: no such COCO file. Pass the instances JSON your annotation tool exported.")
        return
    if os.path.isfile(os.path.normpath(root)):  # normpath: "photo.png/" names the file too
        raise DatasetError(f"{root}: a file, not a dataset. Pass a Penn-Fudan folder (PNGImages/, PedMasks/) or "
                           f"your own data: a COCO instances file (.json), a labelme folder, a YOLO data.yaml or a "
                           f"Pascal VOC folder (of XMLs).")
    if utils.is_main_process() and not os.path.isdir(os.path.join(root, "PNGImages")):
        if make_synthetic is not None:
            if _holds_other_files(root):  # only into a new or empty folder: never among the user's own files
                raise DatasetError(f"{root}: a folder with other files and no PNGImages/, so --demo will not "
                                   f"write its synthetic images there. For your own data pass its COCO file "
                                   f"(--data-path FILE.json), labelme folder or YOLO data.yaml; for the demo, a "
                                   f"new or empty --data-path.")
            make_synthetic(root)
        elif os.path.basename(os.path.normpath(root)) == "PennFudanPed":
            download_pennfudan(root)
    if utils.get_world_size() > 1:
        torch.distributed.barrier()  # the other ranks wait until rank 0 has written the data


def check_test_data_path(data_path, test_data_path):
    """``--test-data-path`` goes with a COCO file or a labelme folder; a Penn-Fudan folder is tested
    on its hold-out, and another file given with it would go unread."""
    if test_data_path and not str(data_path).lower().endswith(".json") and not is_yolo_file(data_path) \
            and not reads_as_labelme(data_path):
        raise DatasetError(f"--test-data-path {test_data_path}: applies to a COCO file or labelme folder as "
                           f"--data-path; {data_path} is a Penn-Fudan folder, tested on its --test-size hold-out. "
                           f"Pass the COCO file the model was trained on as --data-path.")


# A checkpoint keeps where its data was as typed, with the folder it was typed in (``working_dir``),
# so that --resume, --test-only and --export read the same data from another folder, and a project
# moved whole (data beside it) finds its data in the new place.
DATA_PATH_KEYS = ("data_path", "test_data_path", "image_dir")


def saved_path(settings, key):
    """A checkpoint's ``settings[key]`` (one of ``DATA_PATH_KEYS``) as this process reaches it: a
    relative path that still exists from the run's ``working_dir`` becomes that absolute path (the
    data the run read, not a folder of the same name here); one that no longer does is taken from
    here (a moved project); anything else as saved (checkpoints before ``working_dir`` have none)."""
    path, start = settings.get(key), settings.get("working_dir")
    if not isinstance(path, str) or not path or os.path.isabs(path) or not start:
        return path
    there = os.path.join(start, path)
    return there if os.path.exists(there) else path


class DataSplit(NamedTuple):
    """How a run splits its images: ``test_size`` held out, ``train_size`` trained on (None: all), ``seed``."""

    test_size: int
    train_size: int | None
    seed: int


def load_datasets(data_path, pennfudan_dataset, get_transform, split, test_data_path=None, image_dir=None, check=True,
                  class_names=None, ground_truth=True, reading=None):
    """The train and test datasets of a run: a Penn-Fudan folder, a COCO file (``.json``), a labelme
    folder or a YOLO data.yaml.

    Returns a dict: ``train``, ``test`` (Subsets or datasets), ``classes`` (``[{"id", "name"}]``,
    label k + 1 for entry k), ``has_masks``, ``coco_gt`` (the test set's COCO ground truth; None
    without test images) and ``preview``: what
    ``finetune.outputs.plots.save_preview`` draws its first image from, beside the data path (None: the
    Penn-Fudan folder's first image and mask files; else the training ``CocoFormatDataset``).
    ``pennfudan_dataset`` is the tutorial's class (it lives in tv_training.py); ``split`` (a
    ``DataSplit``) says how the images are held out; ``check`` decodes
    every Penn-Fudan pair first; without ``ground_truth`` a Penn-Fudan test set's COCO ground
    truth (which reads every test image) is not built (``coco_gt`` None). ``reading``: how own data
    is read (``coco.ReadOptions``: missing images, crowd regions, whether the model has masks).
    """
    own_format = is_yolo_file(data_path) or reads_as_labelme(data_path)
    if class_names and not own_format:
        raise DatasetError(f"--classes: applies to labelme folders only; {data_path} names its classes itself.")
    _check_coco_flags(data_path, reading)
    if not str(data_path).lower().endswith(".json") and not own_format:
        check_test_data_path(data_path, test_data_path)
        return _pennfudan_datasets(data_path, pennfudan_dataset, get_transform, split, check, ground_truth)
    if own_format:  # a labelme folder or a YOLO data.yaml, read into the same entries
        train, test = load_own_format(data_path, test_data_path, class_names, image_dir, reading)
    else:
        train = load_coco_images(data_path, image_dir, reading=reading)
        test = load_coco_images(test_data_path, image_dir, reading=reading) if test_data_path else None
    masks = reading is None or reading.masks
    train_entries, test_entries = _train_test_entries(data_path, test_data_path, split, train, test, masks)
    return _coco_datasets(data_path, get_transform, train, train_entries, test_entries)


def _check_coco_flags(data_path, reading):
    """The reading flags of COCO files (and VOC folders, read into the same route) are refused for
    other data, where they would do nothing."""
    typed = [flag for flag, on in (("--skip-missing-images", reading and reading.skip_missing_images),
                                   ("--crowd-as-objects", reading and reading.crowd_as_objects)) if on]
    if typed and not str(data_path).lower().endswith(".json") and not is_voc_folder(data_path):
        raise DatasetError(f"{typed[0]}: applies to COCO files and VOC folders only; {data_path} is neither (its "
                           f"reader names a missing image itself, and it has no crowd regions). Drop {typed[0]}.")


def _pennfudan_datasets(data_path, pennfudan_dataset, get_transform, split, check, ground_truth):
    """``load_datasets``' dict for a Penn-Fudan folder: its seeded hold-out as the test Subset."""
    if check:
        summary = check_dataset(data_path)
        print(f"Dataset {data_path}: {summary['images']} images, {summary['instances']} instances, "
              f"{summary['negative_images']} without pedestrians")
    train = pennfudan_dataset(data_path, get_transform(train=True))
    test = pennfudan_dataset(data_path, get_transform(train=False))
    train_idx, test_idx = split_indices(len(train), split.test_size, split.train_size, split.seed)
    test = torch.utils.data.Subset(test, test_idx)
    # built once here, not at every evaluation as the reference's evaluate() would
    return dict(train=torch.utils.data.Subset(train, train_idx), test=test, classes=PENNFUDAN_CLASSES,
                has_masks=True, coco_gt=get_coco_api_from_dataset(test) if ground_truth and len(test) else None,
                preview=None)


def _check_test_set(data_path, test_data_path, train, test, masks=True):
    """Refuse a test set whose categories differ from training's; say when its masks and training's
    disagree (for a model with ``masks``: a box-only one scores boxes alone)."""
    _, classes, has_masks = train
    test_entries, test_classes, test_masks = test
    if [(c["id"], c["name"]) for c in test_classes] != [(c["id"], c["name"]) for c in classes]:
        raise DatasetError(f"{test_data_path}: its categories differ from {data_path}'s "
                           f"({[c['name'] for c in test_classes]} vs {[c['name'] for c in classes]}); "
                           f"train and test files must have the same categories.")
    where = test_data_path or f"{data_path}'s {_held_split(data_path)} split"
    if masks and has_masks and not test_masks and any(e["anns"] for e in test_entries):
        print(f"warning: {where}: boxes only, while the training data has masks: segm AP would score the "
              f"predicted masks against the boxes as rectangles. Give the test set polygons too, or train "
              f"boxes only (--model fasterrcnn).")
    elif test_masks and not has_masks:
        print(f"note: {where}: its masks are not used (the training data has boxes only: a box-only model).")


def _held_split(data_path):
    """The name of the split a dataset is tested on: a YOLO data.yaml's val (else test) split, or "test"."""
    return "val" if is_yolo_file(data_path) and "val" in read_yolo_yaml(data_path)[1] else "test"


def _train_test_entries(data_path, test_data_path, split, train, test, masks=True):
    """The training and test entries: the given test set (checked), or a seeded hold-out of the training entries."""
    entries = train[0]
    if test is not None:
        _check_test_set(data_path, test_data_path, train, test, masks)
        train_entries = entries[:split.train_size] if split.train_size else entries
        return train_entries, test[0]
    train_idx, test_idx = split_indices(len(entries), split.test_size, split.train_size, split.seed)
    return [entries[i] for i in train_idx], [entries[i] for i in test_idx]


def _check_not_all_crowd(data_path, train_entries):
    """Training data whose every annotation is a crowd region (ignore regions, left out of the
    targets) has nothing to train on: said so, with the fix, rather than "0 training images"."""
    anns = [a for e in train_entries for a in e["anns"]]
    if anns and all(a["iscrowd"] for a in anns):
        raise DatasetError(f"{data_path}: all {len(anns)} training annotations are crowd regions (COCO \"iscrowd\": 1, "
                           f"VOC difficult), which are left out of training as ignore regions, so there is nothing "
                           f"to train on. CVAT marks every mask it exports so: pass --crowd-as-objects to train on "
                           f"them as objects.")


def _coco_datasets(data_path, get_transform, train, train_entries, test_entries):
    """``load_datasets``' dict for COCO-route entries (a COCO file, labelme folder or YOLO data.yaml)."""
    entries, classes, has_masks = train
    _check_not_all_crowd(data_path, train_entries)
    # images whose only objects are crowd regions teach nothing: left out of training
    train_entries = [e for e in train_entries if not e["anns"] or any(not a["iscrowd"] for a in e["anns"])]
    n_ann = sum(len(e["anns"]) for e in entries)
    print(f"Dataset {data_path}: {len(entries)} images, {n_ann} annotations, {len(classes)} classes: "
          f"{', '.join(c['name'] for c in classes)}")
    train = CocoFormatDataset(train_entries, classes, get_transform(train=True), has_masks)
    return dict(train=train, test=CocoFormatDataset(test_entries, classes, get_transform(train=False), has_masks),
                classes=classes, has_masks=has_masks,
                coco_gt=coco_ground_truth(test_entries, classes) if test_entries else None, preview=train)
