"""The data of a run, whatever its format: Penn-Fudan folders (pennfudan_data.py), COCO files
(coco_data.py), labelme folders and YOLO data.yaml files (labelme_yolo.py, read into the COCO
reader). ``prepare_data`` makes or downloads a missing dataset, ``load_datasets`` reads the
train and test datasets of a run, ``make_loaders`` their DataLoaders.
"""

import os

import torch

import utils
from coco_data import CocoFormatDataset, coco_ground_truth, load_coco_images
from coco_utils import get_coco_api_from_dataset
from errors import DatasetError
from labelme_yolo import is_labelme_folder, is_yolo_file, load_own_format, reads_as_labelme
from pennfudan_data import PENNFUDAN_CLASSES, check_dataset, download_pennfudan


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
    if is_labelme_folder(root):  # labelme JSONs: your own data, never a place for the demo's or a download
        return
    if str(root).lower().endswith(".json"):  # a COCO file: your own data, nothing to make
        if not os.path.isfile(root):
            raise DatasetError(f"{root}: no such COCO file. Pass the instances JSON your annotation tool exported.")
        return
    if os.path.isfile(os.path.normpath(root)):  # normpath: "photo.png/" names the file too
        raise DatasetError(f"{root}: a file, not a dataset. Pass a Penn-Fudan folder (PNGImages/, PedMasks/) or "
                           f"your own data: a COCO instances file (.json), a labelme folder or a YOLO data.yaml.")
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


def split_indices(n, test_size, train_size, seed):
    """Seeded random split (the tutorial's unseeded randperm makes runs unrepeatable)."""
    if test_size >= n:
        raise DatasetError(f"--test-size {test_size} leaves no training image out of {n}; use a smaller value (to "
                           f"score every image of a COCO file or labelme folder, pass it as --test-data-path).")
    indices = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    train, test = indices[:-test_size] if test_size > 0 else indices, indices[-test_size:] if test_size > 0 else []
    if train_size is not None:
        train = train[:train_size]
    return train, test


def ignore_ctrl_c(worker_id):
    """DataLoader workers leave Ctrl-C to the main process: a terminal sends SIGINT to the whole
    process group, and a worker that died of it would fail the batch the main process still
    needs while it finishes the current iteration (training_run.StopAtSafePoint)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loaders(dataset, dataset_test, batch_size, workers, distributed, seed, aspect_ratio_group_factor=-1,
                 pin_memory=False):
    """Train/test DataLoaders; returns (train_loader, test_loader, train_sampler, shuffle_generator)."""
    shuffle_gen = torch.Generator().manual_seed(seed)
    if distributed:
        train_sampler = torch.utils.data.distributed.DistributedSampler(dataset, seed=seed)
        test_sampler = torch.utils.data.distributed.DistributedSampler(dataset_test, shuffle=False)
    else:
        train_sampler = torch.utils.data.RandomSampler(dataset, generator=shuffle_gen)
        test_sampler = torch.utils.data.SequentialSampler(dataset_test)
    if aspect_ratio_group_factor >= 0:
        from group_by_aspect_ratio import GroupedBatchSampler, create_aspect_ratio_groups

        group_ids = create_aspect_ratio_groups(dataset, k=aspect_ratio_group_factor)
        batch_sampler = GroupedBatchSampler(train_sampler, group_ids, batch_size)
    else:
        batch_sampler = torch.utils.data.BatchSampler(train_sampler, batch_size, drop_last=True)
    common = dict(num_workers=workers, collate_fn=utils.collate_fn, pin_memory=pin_memory,
                  worker_init_fn=ignore_ctrl_c if workers > 0 else None)
    # training workers start afresh each epoch, seeded from the epoch's seed (torch.manual_seed at
    # its start): persistent ones would carry their random flips over from epoch 0, and a run
    # resumed at epoch N would draw others than the uninterrupted run
    train_loader = torch.utils.data.DataLoader(dataset, batch_sampler=batch_sampler, **common)
    test_loader = torch.utils.data.DataLoader(dataset_test, batch_size=1, sampler=test_sampler,
                                              persistent_workers=workers > 0, **common)
    return train_loader, test_loader, train_sampler, shuffle_gen


def load_datasets(data_path, pennfudan_dataset, get_transform, test_size, train_size, seed,
                  test_data_path=None, image_dir=None, check=True, class_names=None, ground_truth=True):
    """The train and test datasets of a run: a Penn-Fudan folder, a COCO file (``.json``), a labelme
    folder or a YOLO data.yaml.

    Returns a dict: ``train``, ``test`` (Subsets or datasets), ``classes`` (``[{"id", "name"}]``,
    label k + 1 for entry k), ``has_masks``, ``coco_gt`` (the test set's COCO ground truth; None
    without test images) and ``preview``: what
    ``outputs.save_preview`` draws its first image from, beside the data path (None: the
    Penn-Fudan folder's first image and mask files; else the training ``CocoFormatDataset``).
    ``pennfudan_dataset`` is the tutorial's class (it lives in tv_training.py); ``check`` decodes
    every Penn-Fudan pair first; without ``ground_truth`` a Penn-Fudan test set's COCO ground
    truth (which reads every test image) is not built (``coco_gt`` None).
    """
    own_format = is_yolo_file(data_path) or reads_as_labelme(data_path)
    if class_names and not own_format:
        raise DatasetError(f"--classes: applies to labelme folders only; {data_path} names its classes itself.")
    if not str(data_path).lower().endswith(".json") and not own_format:
        check_test_data_path(data_path, test_data_path)
        if check:
            summary = check_dataset(data_path)
            print(f"Dataset {data_path}: {summary['images']} images, {summary['instances']} instances, "
                  f"{summary['negative_images']} without pedestrians")
        train = pennfudan_dataset(data_path, get_transform(train=True))
        test = pennfudan_dataset(data_path, get_transform(train=False))
        train_idx, test_idx = split_indices(len(train), test_size, train_size, seed)
        test = torch.utils.data.Subset(test, test_idx)
        # built once here, not at every evaluation as the reference's evaluate() would
        return dict(train=torch.utils.data.Subset(train, train_idx), test=test, classes=PENNFUDAN_CLASSES,
                    has_masks=True, coco_gt=get_coco_api_from_dataset(test) if ground_truth and len(test) else None,
                    preview=None)
    if own_format:  # a labelme folder or a YOLO data.yaml, read into the same entries
        (entries, classes, has_masks), test = load_own_format(data_path, test_data_path, class_names, image_dir)
    else:
        entries, classes, has_masks = load_coco_images(data_path, image_dir)
        test = load_coco_images(test_data_path, image_dir) if test_data_path else None
    if test is not None:
        test_entries, test_classes, test_masks = test
        if [(c["id"], c["name"]) for c in test_classes] != [(c["id"], c["name"]) for c in classes]:
            raise DatasetError(f"{test_data_path}: its categories differ from {data_path}'s "
                               f"({[c['name'] for c in test_classes]} vs {[c['name'] for c in classes]}); "
                               f"train and test files must have the same categories.")
        train_entries = entries[:train_size] if train_size else entries
        where = test_data_path or f"{data_path}'s test split"
        if has_masks and not test_masks and any(e["anns"] for e in test_entries):
            print(f"warning: {where}: boxes only, while the training data has masks: segm AP would score the "
                  f"predicted masks against the boxes as rectangles. Give the test set polygons too, or train "
                  f"boxes only (--model fasterrcnn).")
        elif test_masks and not has_masks:
            print(f"note: {where}: its masks are not used (the training data has boxes only: a box-only model).")
    else:
        train_idx, test_idx = split_indices(len(entries), test_size, train_size, seed)
        train_entries, test_entries = [entries[i] for i in train_idx], [entries[i] for i in test_idx]
    # images whose only objects are crowd regions teach nothing: left out of training
    train_entries = [e for e in train_entries if not e["anns"] or any(not a["iscrowd"] for a in e["anns"])]
    n_ann = sum(len(e["anns"]) for e in entries)
    print(f"Dataset {data_path}: {len(entries)} images, {n_ann} annotations, {len(classes)} classes: "
          f"{', '.join(c['name'] for c in classes)}")
    train = CocoFormatDataset(train_entries, classes, get_transform(train=True), has_masks)
    return dict(train=train, test=CocoFormatDataset(test_entries, classes, get_transform(train=False), has_masks),
                classes=classes, has_masks=has_masks,
                coco_gt=coco_ground_truth(test_entries, classes) if test_entries else None, preview=train)
