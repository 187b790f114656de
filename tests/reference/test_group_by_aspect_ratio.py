"""--aspect-ratio-group-factor: GroupedBatchSampler and create_aspect_ratio_groups."""

import math
import os

import pytest
import torch
from PIL import Image

import tv_training
import utils
from finetune.data.synthetic import make_synthetic_pennfudan
from group_by_aspect_ratio import GroupedBatchSampler, _quantize, compute_aspect_ratios, create_aspect_ratio_groups

# ---------------------------------------------------------------------------------------
# GroupedBatchSampler
# ---------------------------------------------------------------------------------------


def _check_grouped_batches(batches, indices, group_ids, batch_size):
    """Every index once; full one-group batches, then the leftovers packed group after group."""
    flat = [i for b in batches for i in b]
    assert sorted(flat) == sorted(indices)
    assert len(batches) == math.ceil(len(indices) / batch_size)
    assert all(len(b) == batch_size for b in batches[:-1])
    # the tail: the indices left over in each group (fewer than batch_size per group)
    full = 0
    while full < len(batches) and len(batches[full]) == batch_size and len({group_ids[i] for i in batches[full]}) == 1:
        full += 1
    tail = [i for b in batches[full:] for i in b]
    tail_groups = [group_ids[i] for i in tail]
    assert tail_groups == sorted(tail_groups)
    for g in set(tail_groups):
        assert tail_groups.count(g) < batch_size
    # a batch with two groups can only be a leftover one
    for b in batches[:full]:
        assert len({group_ids[i] for i in b}) == 1
    return full


@pytest.mark.parametrize("n, batch_size, num_groups", [(23, 4, 3), (16, 2, 2), (7, 3, 5), (5, 8, 2), (12, 1, 3)])
def test_grouped_batch_sampler_every_index_once(n, batch_size, num_groups):
    g = torch.Generator().manual_seed(n)
    group_ids = torch.randint(num_groups, (n,), generator=g).tolist()
    sampler = torch.utils.data.RandomSampler(range(n), generator=g)
    batch_sampler = GroupedBatchSampler(sampler, group_ids, batch_size)
    for _ in range(3):  # every epoch (a new shuffle) has the same properties
        batches = list(batch_sampler)
        assert len(batches) == len(batch_sampler)
        _check_grouped_batches(batches, list(range(n)), group_ids, batch_size)


def test_grouped_batch_sampler_keeps_the_sampler_order_within_groups():
    group_ids = [0, 1, 0, 1, 0, 1, 0, 1, 0]
    batches = list(GroupedBatchSampler(torch.utils.data.SequentialSampler(range(9)), group_ids, 2))
    assert batches == [[0, 2], [1, 3], [4, 6], [5, 7], [8]]
    # one group: exactly BatchSampler(drop_last=False)
    batches = list(GroupedBatchSampler(torch.utils.data.SequentialSampler(range(7)), [0] * 7, 3))
    assert batches == [[0, 1, 2], [3, 4, 5], [6]]


def test_grouped_batch_sampler_same_length_on_every_rank():
    """With DistributedSampler every rank must run the same number of steps (else DDP hangs)."""
    n, batch_size = 21, 2
    group_ids = [i % 3 for i in range(n)]
    seen = []
    lengths = set()
    for rank in range(2):
        sampler = torch.utils.data.distributed.DistributedSampler(range(n), num_replicas=2, rank=rank, seed=0)
        sampler.set_epoch(1)
        batch_sampler = GroupedBatchSampler(sampler, group_ids, batch_size)
        batches = list(batch_sampler)
        lengths.update({len(batches), len(batch_sampler)})
        _check_grouped_batches(batches, list(sampler), group_ids, batch_size)
        seen += [i for b in batches for i in b]
    assert len(lengths) == 1
    assert set(seen) == set(range(n))  # with DistributedSampler's padding, one index appears twice
    assert len(seen) == n + 1


def test_grouped_batch_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="Sampler"):
        GroupedBatchSampler(list(range(4)), [0] * 4, 2)
    with pytest.raises(ValueError, match="batch_size"):
        GroupedBatchSampler(torch.utils.data.SequentialSampler(range(4)), [0] * 4, 0)


# ---------------------------------------------------------------------------------------
# create_aspect_ratio_groups
# ---------------------------------------------------------------------------------------


class SizesOnly(torch.utils.data.Dataset):
    """Knows its image sizes; loading an item is an error (it must never be needed)."""

    def __init__(self, sizes):
        self.sizes = sizes
        self.asked = []

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, idx):
        raise AssertionError("create_aspect_ratio_groups decoded an image")

    def get_height_and_width(self, idx):
        self.asked.append(idx)
        return self.sizes[idx]


# (height, width): aspect ratios 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0
SIZES = [(100, 40), (100, 50), (100, 75), (80, 80), (60, 90), (50, 100), (30, 90)]


def test_quantize():
    assert _quantize([0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0], [2.0, 0.5, 1.0]) == [0, 1, 1, 2, 2, 3, 3]
    assert _quantize([0.9, 1.0, 1.1], [1.0]) == [0, 1, 1]


def test_create_aspect_ratio_groups_bins(capsys):
    dataset = SizesOnly(SIZES)
    assert create_aspect_ratio_groups(dataset, k=0) == [0, 0, 0, 1, 1, 1, 1]
    out = capsys.readouterr().out
    assert "[1.0]" in out and "[3, 4]" in out
    # k=1: edges 2**[-1, 0, 1] = [0.5, 1, 2], four groups
    assert create_aspect_ratio_groups(dataset, k=1) == [0, 1, 1, 2, 2, 3, 3]
    out = capsys.readouterr().out
    assert "[0.5, 1.0, 2.0]" in out and "[1, 2, 2, 2]" in out
    # k=3: 7 log2-spaced edges from 0.5 to 2, eight groups
    groups = create_aspect_ratio_groups(dataset, k=3)
    assert groups == sorted(groups) and groups[0] == 0 and groups[-1] == 7 and len(set(groups)) <= 8


def test_create_aspect_ratio_groups_sees_through_subsets_without_decoding():
    base = SizesOnly(SIZES)
    inner = torch.utils.data.Subset(base, [6, 5, 4, 3, 2, 1, 0])
    outer = torch.utils.data.Subset(inner, [0, 3, 6])  # base images 6, 3, 0
    assert compute_aspect_ratios(outer) == [3.0, 1.0, 0.4]
    assert create_aspect_ratio_groups(outer, k=0) == [1, 1, 0]
    assert set(base.asked) == {0, 3, 6}


def test_unwrap_subset_maps_items_to_the_base_dataset():
    """utils.unwrap_subset, which this module, coco_utils.py and finetune/outputs/ share."""

    base = SizesOnly(SIZES)
    outer = torch.utils.data.Subset(torch.utils.data.Subset(base, [6, 5, 4, 3, 2, 1, 0]), [0, 3, 6])
    assert utils.unwrap_subset(outer) == (base, [6, 3, 0])
    assert utils.unwrap_subset(outer, [2, 0]) == (base, [0, 6])  # indices into the outer Subset
    assert utils.unwrap_subset(base) == (base, list(range(len(SIZES))))  # no Subset: the dataset itself


def test_create_aspect_ratio_groups_falls_back_to_loading():
    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, idx):
            return torch.zeros(3, 10, 30 if idx else 5), {}

    assert compute_aspect_ratios(Plain()) == [0.5, 3.0]
    assert create_aspect_ratio_groups(Plain()) == [0, 1]


def test_pennfudan_groups_from_png_headers(tmp_path, monkeypatch):


    make_synthetic_pennfudan(str(tmp_path), num_images=6, seed=1, height_range=(40, 60), width_range=(20, 100))
    dataset = tv_training.PennFudanDataset(str(tmp_path), None)
    monkeypatch.setattr(tv_training.PennFudanDataset, "__getitem__", SizesOnly.__getitem__)
    subset = torch.utils.data.Subset(dataset, [5, 0, 2])
    expected = []
    for i in subset.indices:
        with Image.open(os.path.join(dataset.root, "PNGImages", dataset.imgs[i])) as im:
            expected.append(int(im.width / im.height >= 1.0))
    assert create_aspect_ratio_groups(subset, k=0) == expected
