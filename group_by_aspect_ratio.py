"""Batches of images with similar aspect ratios, with the API of torchvision's
``references/detection/group_by_aspect_ratio.py``.

    from group_by_aspect_ratio import GroupedBatchSampler, create_aspect_ratio_groups

    group_ids = create_aspect_ratio_groups(dataset, k=3)
    batch_sampler = GroupedBatchSampler(sampler, group_ids, batch_size)
    loader = DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=utils.collate_fn)

A detection batch is padded to its largest image, so mixing portrait and landscape images
in one batch wastes memory and compute on padding. Grouping by aspect ratio avoids that.

Departure from the reference: every index the sampler yields appears in exactly one
batch per epoch. The reference instead fills its last batches by repeating images of
the same group and drops the remaining ones; here the leftovers of the groups (fewer
than ``batch_size`` per group) are packed together, ordered by group, into the last
batches, which may then mix neighbouring groups, and the very last batch may be short.
The number of batches is ``ceil(len(sampler) / batch_size)`` whatever the grouping, so
every process of a distributed run (``DistributedSampler``: same count on every rank)
runs the same number of steps.

It needs utils.py beside it (``unwrap_subset``), which the loader above uses anyway.
"""

import bisect
import math
from collections import defaultdict

import numpy as np
import torch
from torch.utils.data.sampler import BatchSampler, Sampler

import utils


class GroupedBatchSampler(BatchSampler):
    """Wrap ``sampler`` into batches of ``batch_size`` indices that share a group id.

    ``group_ids[i]`` is the group of dataset index ``i`` (e.g. from
    ``create_aspect_ratio_groups``). Indices are taken in the sampler's order; a batch is
    yielded as soon as its group has ``batch_size`` of them, so the order stays close to
    the sampler's (shuffled) one. What is left at the end is batched as described in the
    module docstring: every index exactly once, ``ceil(len(sampler) / batch_size)`` batches.
    """

    def __init__(self, sampler, group_ids, batch_size):
        if not isinstance(sampler, Sampler):
            raise ValueError(f"sampler should be a torch.utils.data.Sampler, got {type(sampler).__name__}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size should be a positive integer, got {batch_size!r}")
        self.sampler = sampler
        self.group_ids = list(group_ids)
        self.batch_size = batch_size

    def __iter__(self):
        pending = defaultdict(list)  # group id -> indices waiting for a full batch
        for idx in self.sampler:
            group = self.group_ids[idx]
            waiting = pending[group]
            waiting.append(idx)
            if len(waiting) == self.batch_size:
                yield waiting
                pending[group] = []
        # fewer than batch_size left in each group: pack them, group after group
        leftovers = [idx for group in sorted(pending) for idx in pending[group]]
        for start in range(0, len(leftovers), self.batch_size):
            yield leftovers[start:start + self.batch_size]

    def __len__(self):
        return math.ceil(len(self.sampler) / self.batch_size)


def _aspect_ratios_by_decoding(dataset):
    """Slow path for datasets without ``get_height_and_width``: load every item once."""
    print(f"Computing aspect ratios of {len(dataset)} images by loading them "
          f"(give the dataset a get_height_and_width(idx) method to skip this)")
    ratios = []
    for i in range(len(dataset)):
        image = dataset[i][0]
        if isinstance(image, torch.Tensor):
            height, width = image.shape[-2:]
        else:  # PIL image
            width, height = image.size
        ratios.append(float(width) / float(height))
    return ratios


def compute_aspect_ratios(dataset, indices=None):
    """Width / height of every image of ``dataset`` (or of ``indices`` into it).

    Uses the innermost dataset's ``get_height_and_width(idx)`` (``PennFudanDataset`` reads
    the PNG header) so that no image is decoded; ``Subset`` wrappers are seen through.
    A dataset without that method is loaded item by item instead.
    """
    base, base_indices = utils.unwrap_subset(dataset, indices)
    if hasattr(base, "get_height_and_width"):
        ratios = []
        for i in base_indices:
            height, width = base.get_height_and_width(i)
            ratios.append(float(width) / float(height))
        return ratios
    if indices is not None:
        dataset = torch.utils.data.Subset(dataset, list(indices))
    return _aspect_ratios_by_decoding(dataset)


def _quantize(x, bins):
    """Bin number of every value of ``x``: how many of the (sorted) ``bins`` edges are <= it."""
    edges = sorted(bins)
    return [bisect.bisect_right(edges, value) for value in x]


def create_aspect_ratio_groups(dataset, k=0):
    """A group id per image of ``dataset``: its aspect-ratio bin.

    The bin edges are ``2 ** linspace(-1, 1, 2k + 1)`` (log2-spaced from 1:2 to 2:1, 1.0 in
    the middle), giving ``2k + 2`` groups; ``k = 0`` has the single edge 1.0 (portrait vs
    landscape). Prints the edges and how many images fall in each bin.
    """
    aspect_ratios = compute_aspect_ratios(dataset)
    bins = (2 ** np.linspace(-1, 1, 2 * k + 1)).tolist() if k > 0 else [1.0]
    groups = _quantize(aspect_ratios, bins)
    counts = np.bincount(groups, minlength=len(bins) + 1).tolist()
    print(f"Using {[round(b, 3) for b in bins]} as bins for aspect ratio quantization")
    print(f"Count of instances per bin: {counts}")
    return groups
