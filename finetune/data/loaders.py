"""How a run's images are split and fed to it: ``split_indices`` (the seeded hold-out),
``make_loaders`` (the train and test DataLoaders, their workers leaving Ctrl-C to the main
process) and ``loader_workers`` (the worker count, capped at the CPU cores).
"""

import os
import signal

import torch

import utils
from finetune.errors import DatasetError
from group_by_aspect_ratio import GroupedBatchSampler, create_aspect_ratio_groups


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
    needs while it finishes the current iteration (``finetune.run.interrupts.StopAtSafePoint``)."""

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loaders(dataset, dataset_test, batch_size, workers, distributed, seed, aspect_ratio_group_factor=-1,
                 pin_memory=False, train_collate=utils.collate_fn):
    """Train/test DataLoaders; returns (train_loader, test_loader, train_sampler, shuffle_generator).
    ``train_collate`` makes the training batches (``augmentation.train_collate``: copy-paste or the tutorial's)."""
    shuffle_gen = torch.Generator().manual_seed(seed)
    if distributed:
        train_sampler = torch.utils.data.distributed.DistributedSampler(dataset, seed=seed)
        test_sampler = torch.utils.data.distributed.DistributedSampler(dataset_test, shuffle=False)
    else:
        train_sampler = torch.utils.data.RandomSampler(dataset, generator=shuffle_gen)
        test_sampler = torch.utils.data.SequentialSampler(dataset_test)
    if aspect_ratio_group_factor >= 0:
        group_ids = create_aspect_ratio_groups(dataset, k=aspect_ratio_group_factor)
        batch_sampler = GroupedBatchSampler(train_sampler, group_ids, batch_size)
    else:
        batch_sampler = torch.utils.data.BatchSampler(train_sampler, batch_size, drop_last=True)
    common = dict(num_workers=workers, pin_memory=pin_memory, worker_init_fn=ignore_ctrl_c if workers > 0 else None)
    # training workers start afresh each epoch, seeded from the epoch's seed (torch.manual_seed at
    # its start): persistent ones would carry their random flips over from epoch 0, and a run
    # resumed at epoch N would draw others than the uninterrupted run
    train_loader = torch.utils.data.DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=train_collate, **common)
    test_loader = torch.utils.data.DataLoader(dataset_test, batch_size=1, sampler=test_sampler,
                                              collate_fn=utils.collate_fn, persistent_workers=workers > 0, **common)
    return train_loader, test_loader, train_sampler, shuffle_gen


def loader_workers(requested):
    """Data-loading workers: ``requested``, capped at the CPU cores (more only compete with the model)."""
    workers = min(requested, os.cpu_count() or 1)
    if workers < requested:
        print(f"Using {workers} data-loading workers (-j {requested} capped at the {os.cpu_count()} CPU cores)")
    return workers
