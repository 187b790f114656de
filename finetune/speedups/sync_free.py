"""Mask R-CNN's training step and evaluation with (almost) no host syncs: the code path for a GPU.

On a GPU the host queues kernels ahead of the device until an op's result size or value must be
read back (a ``torch.where(mask)``, an ``.item()``, NMS); then it waits for the device to drain,
and the device waits for the host to queue again. torchvision 0.29.1's Mask R-CNN does that 65
times in a batch-2 training step (``finetune.speedups.op_count``; docs/gpu.md). ``make_sync_free``
replaces, on one model instance, the parts that read data-dependent sizes without needing them,
each giving torchvision's results up to float rounding:

* ``MultiLevelRoIAlign``: the FPN levels' RoIAlign in one weighted gather over all levels with a
  per-RoI level index (torchvision: ``torch.where(levels == level)`` per level and pooler);
* the RPN's proposal filtering (``_filter_proposals``) and the box head's ``_postprocess_detections``:
  small and low-scoring boxes flagged instead of removed, one NMS over all images and levels or
  classes (offset boxes, as torchvision's coordinate trick), the flagged boxes sent to one far
  group of identical boxes plus a sentinel so that exactly one of them survives NMS, last: one
  sync (NMS's output size), plus one for the per-image counts when a batch has several images;
* the Matcher's low-quality matches as mask ops (``_set_low_quality_matches``);
* the samplers by random scores and top-k (``RandTopkSampler``): the same distribution as
  torchvision's ``randperm`` (a uniformly random subset of the positives and negatives), another
  random stream; ``exact_sampling=True`` keeps torchvision's sampler and stream;
* the RPN's loss over sampled-anchor masks instead of their indices (``_rpn_compute_loss``);
* the degenerate-box check of the targets as ``torch._assert_async`` (``_generalized_rcnn_forward``),
  and the transform's random size choice skipped when there is one size (a CPU value anyway).

Still syncing (their result sizes are needed): the box head's sampled proposals (``torch.where``
per image), the positives of the box loss and the mask head, NMS.

Private torchvision APIs used here (checked against torchvision 0.29.1, torch 2.14.1):
``RegionProposalNetwork._get_top_n_idx``/``pre_nms_top_n``/``post_nms_top_n``/``box_coder``,
``RoIHeads.box_coder``, ``GeneralizedRCNN.eager_outputs``, ``GeneralizedRCNNTransform.torch_choice``,
``torchvision.ops.poolers``' ``_convert_to_roi_format``, ``_filter_input``, ``_setup_scales``.
"""

import collections
import functools
import types

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree
import torchvision
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import boxes as box_ops
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

# what make_sync_free sets on module instances (as_reference_model / undo_sync_free remove them)
INSTANCE_METHODS = ("forward", "filter_proposals", "compute_loss", "postprocess_detections",
                    "set_low_quality_matches_", "torch_choice")


# ----- RoI pooling over all FPN levels at once -------------------------------------------------

def bilinear_taps(start, length, bins, samples, size):
    """Along one axis, for every RoI, bin and sample: the two neighbouring pixel indices and their
    bilinear weights, as torchvision's CPU ``roi_align`` (``aligned=False``) computes them.

    ``start``/``length``: (K,) RoI start and length in feature-map pixels; ``size``: the map's
    size along the axis (an int, or a (K, 1, 1) tensor: each RoI's map). Returns ``index`` and
    ``weight``, both (K, bins, samples, 2); a sample more than one pixel outside the map weighs 0.
    """
    step = (length / bins).view(-1, 1, 1)
    b = torch.arange(bins, dtype=start.dtype, device=start.device).view(1, -1, 1)
    s = torch.arange(samples, dtype=start.dtype, device=start.device).view(1, 1, -1)
    at = start.view(-1, 1, 1) + b * step + (s + 0.5) * step / samples
    inside = (at >= -1.0) & (at <= size)
    at = at.nan_to_num(0.0).clamp(min=0)  # a NaN box pools zeros instead of reading outside the map
    low = at.floor().clamp(max=size - 1)
    at = torch.where(at >= size - 1, low, at)  # the last row/column: no neighbour beyond it
    high = (low + 1).clamp(max=size - 1)
    frac = at - low
    weight = torch.stack([1 - frac, frac], -1) * inside.unsqueeze(-1)
    return torch.stack([low, high], -1).long(), weight


def multilevel_roi_align(features, rois, levels, scales, output_size, sampling_ratio):
    """``torchvision.ops.roi_align`` of each RoI on its own level's map (``levels[k]`` indexes
    ``features``/``scales``), for all levels in one weighted gather: the levels' NHWC maps are
    one (sum N*H*W, C) table; each RoI reads its level's rows. The same values and gradients as
    pooling level by level, up to float rounding; no op whose size depends on the data."""
    n, c = features[0].shape[:2]
    table = torch.cat([f.permute(0, 2, 3, 1).reshape(-1, c) for f in features])
    sizes = [f.shape[-2:] for f in features]
    offsets = [0]
    for h, w in sizes[:-1]:
        offsets.append(offsets[-1] + n * h * w)
    lookup = _to_device(tuple((float(h), float(w), float(s), float(o)) for (h, w), s, o in zip(sizes, scales, offsets)),
                        rois.device)
    per_roi = lookup[levels]
    first_row = per_roi[:, 3].long()
    (ph, pw), k, r = output_size, rois.shape[0], sampling_ratio
    h, w, scale = per_roi[:, 0], per_roi[:, 1], per_roi[:, 2].to(rois.dtype)
    x0, y0, x1, y1 = (rois[:, i] * scale for i in range(1, 5))
    size_h, size_w = h.view(-1, 1, 1).to(rois.dtype), w.view(-1, 1, 1).to(rois.dtype)
    iy, wy = bilinear_taps(y0, (y1 - y0).clamp(min=1.0), ph, r, size_h)
    ix, wx = bilinear_taps(x0, (x1 - x0).clamp(min=1.0), pw, r, size_w)
    image_rows = (first_row + rois[:, 0].long() * (h * w).long()).view(k, 1, 1, 1, 1, 1, 1)
    index = image_rows + iy.view(k, ph, 1, r, 2, 1, 1) * w.long().view(k, 1, 1, 1, 1, 1, 1) + ix.view(
        k, 1, pw, 1, 1, r, 2)
    weight = wy.view(k, ph, 1, r, 2, 1, 1) * wx.view(k, 1, pw, 1, 1, r, 2) * (1.0 / (r * r))
    taps = 4 * r * r
    pooled = F.embedding_bag(index.reshape(k * ph * pw, taps), table, mode="sum",
                             per_sample_weights=weight.reshape(k * ph * pw, taps).to(table.dtype))
    return pooled.view(k, ph, pw, c).permute(0, 3, 1, 2)


@functools.lru_cache(maxsize=64)
def _to_device(values, device):
    """A small float64 table made on the host (``values``: a tuple of rows), on ``device`` without
    a sync (a copy from pageable host memory waits for the device's queue; one from pinned memory
    does not). Kept per table and device, read only: the same feature-map sizes come back every
    step, and a table already on the device costs no copy at all."""
    with torch.inference_mode(False):  # kept for training too: not an inference tensor
        table = torch.tensor(values, dtype=torch.float64)
        if device.type != "cuda":
            return table.to(device)
        return table.pin_memory().to(device, non_blocking=True)


def pool_all_levels(pool, x, boxes, image_shapes):
    """``MultiScaleRoIAlign.forward`` of ``pool`` in one ``multilevel_roi_align`` (a fixed
    sampling ratio; otherwise torchvision's pooling). Pools in float32 (float64 maps in float64)
    and returns the maps' dtype, as torchvision's autocast kernel."""
    features = _filter_input(x, pool.featmap_names)
    if pool.scales is None or pool.map_levels is None:
        pool.scales, pool.map_levels = _setup_scales(features, image_shapes, pool.canonical_scale,
                                                     pool.canonical_level)
    dtype = features[0].dtype
    if pool.sampling_ratio <= 0 or dtype not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        return MultiScaleRoIAlign.forward(pool, x, boxes, image_shapes)
    rois = _convert_to_roi_format(boxes)
    levels = pool.map_levels(boxes) if len(features) > 1 else rois.new_zeros(len(rois), dtype=torch.long)
    work = dtype if dtype == torch.float64 else torch.float32
    with torch.autocast(features[0].device.type, enabled=False):
        pooled = multilevel_roi_align([f.to(work) for f in features], rois.to(work), levels, pool.scales,
                                      pool.output_size, pool.sampling_ratio)
    return pooled.to(dtype)


class MultiLevelRoIAlign(MultiScaleRoIAlign):
    """``MultiScaleRoIAlign`` pooling all levels at once (``pool_all_levels``) while ``active``.
    (This project's ``FastMultiScaleRoIAlign`` does the same itself.)"""

    def forward(self, x, boxes, image_shapes):
        if not active(self, x):
            return MultiScaleRoIAlign.forward(self, x, boxes, image_shapes)
        return pool_all_levels(self, x, boxes, image_shapes)


# ----- NMS with flags instead of removal ---------------------------------------------------------

def nms_of_flagged(boxes, scores, groups, valid, iou_threshold):
    """The indices NMS keeps among the ``valid`` boxes, NMS applied per group (``groups``:
    int64, >= 0), sorted by decreasing score: what torchvision's ``batched_nms`` gives on
    ``boxes[valid]``, as indices into ``boxes``, with one sync (NMS's output size).

    Groups are kept apart by offsetting their boxes (torchvision's coordinate trick). The boxes
    that are not valid become one more, far group of identical unit boxes scoring -inf, with a
    sentinel of the same kind appended: NMS keeps exactly one of them, the last index kept, which
    is dropped. No valid box is suppressed by them (they score lowest) nor overlaps them.
    """
    if iou_threshold >= 1:  # identical boxes would not suppress each other: filter after NMS (a sync)
        keep = torchvision.ops.nms(boxes, torch.where(valid, scores, float("-inf")), iou_threshold)
        return keep[valid[keep]]
    sentinel = torch.cat([boxes.new_zeros(1, 2), boxes.new_ones(1, 2)], 1)  # made on the device: no copy
    unit = sentinel.expand_as(boxes)
    valid = valid & torch.isfinite(boxes).all(1)
    safe = torch.cat([torch.where(valid[:, None], boxes, unit), sentinel])
    low = safe.min().clamp(max=0)
    span = safe.max() - low + 1
    far = groups.max() + 1 if groups.numel() else groups.new_zeros(())
    group = torch.cat([torch.where(valid, groups, far), far.view(1)])
    shifted = safe - low + (group * span).to(boxes.dtype)[:, None]
    ranked = torch.cat([torch.where(valid, scores, float("-inf")), scores.new_full((1,), float("-inf"))])
    return torchvision.ops.nms(shifted, ranked, iou_threshold)[:-1]


def _split_by_image(keep, per_image, num_images, top_n):
    """``keep`` (flat indices over ``num_images`` x ``per_image`` boxes, score order) as one index
    tensor per image, its first ``top_n`` each: one sync for the counts when there are several."""
    if num_images == 1:
        return [keep[:top_n]]
    image = keep // per_image
    keep = keep[torch.sort(image, stable=True)[1]]
    counts = (image[None, :] == torch.arange(num_images, device=keep.device)[:, None]).sum(1).tolist()
    return [part[:top_n] for part in keep.split(counts)]


def _filter_proposals(self, proposals, objectness, image_shapes, num_anchors_per_level):
    """``RegionProposalNetwork.filter_proposals``: per image and level the top boxes, clipped;
    small and low-scoring ones flagged; NMS per image and level in one call (``nms_of_flagged``)."""
    num_images, device = proposals.shape[0], proposals.device
    objectness = objectness.detach().reshape(num_images, -1)
    levels = torch.cat([torch.full((n,), i, dtype=torch.int64, device=device)
                        for i, n in enumerate(num_anchors_per_level)]).reshape(1, -1).expand_as(objectness)
    top_n_idx = self._get_top_n_idx(objectness, num_anchors_per_level)
    batch_idx = torch.arange(num_images, device=device)[:, None]
    scores = torch.sigmoid(objectness[batch_idx, top_n_idx])
    levels, proposals = levels[batch_idx, top_n_idx], proposals[batch_idx, top_n_idx]
    boxes = torch.stack([box_ops.clip_boxes_to_image(b, s) for b, s in zip(proposals, image_shapes)])
    wh = boxes[..., 2:] - boxes[..., :2]
    valid = (wh >= self.min_size).all(-1) & (scores >= self.score_thresh)
    groups = batch_idx * len(num_anchors_per_level) + levels
    per_image = boxes.shape[1]
    keep = nms_of_flagged(boxes.reshape(-1, 4), scores.reshape(-1), groups.reshape(-1), valid.reshape(-1),
                          self.nms_thresh)
    parts = _split_by_image(keep, per_image, num_images, self.post_nms_top_n())
    flat_boxes, flat_scores = boxes.reshape(-1, 4), scores.reshape(-1)
    return [flat_boxes[p] for p in parts], [flat_scores[p] for p in parts]


def _postprocess_detections(self, class_logits, box_regression, proposals, image_shapes):
    """``RoIHeads.postprocess_detections``: every class's box per proposal, low scores and
    empty boxes flagged, NMS per class (``nms_of_flagged``), the best ``detections_per_img``."""
    num_classes = class_logits.shape[-1]
    per_image = [len(p) for p in proposals]
    pred_boxes = self.box_coder.decode(box_regression, proposals).split(per_image)
    pred_scores = F.softmax(class_logits, -1).split(per_image)
    results = ([], [], [])
    for boxes, scores, image_shape in zip(pred_boxes, pred_scores, image_shapes):
        boxes = box_ops.clip_boxes_to_image(boxes, image_shape)[:, 1:].reshape(-1, 4)
        labels = torch.arange(num_classes, device=boxes.device).view(1, -1).expand_as(scores)[:, 1:].reshape(-1)
        scores = scores[:, 1:].reshape(-1)
        wh = boxes[:, 2:] - boxes[:, :2]
        valid = (scores > self.score_thresh) & (wh >= 1e-2).all(1)
        keep = nms_of_flagged(boxes, scores, labels, valid, self.nms_thresh)[: self.detections_per_img]
        for out, value in zip(results, (boxes, scores, labels)):
            out.append(value[keep])
    return results


# ----- matching, sampling and the RPN loss without index lists ----------------------------------

def _set_low_quality_matches(self, matches, all_matches, match_quality_matrix):
    """``Matcher.set_low_quality_matches_`` as mask ops: a prediction that is some ground truth's
    best match (ties included) takes its best ground truth, in place."""
    highest = match_quality_matrix.max(dim=1, keepdim=True).values
    best_for_some_gt = (match_quality_matrix == highest).any(0)
    matches.copy_(torch.where(best_for_some_gt, all_matches, matches))


def _first_k_by_score(candidates, scores, k, most):
    """A uint8 mask of the ``k`` (a 0-dim tensor, at most the int ``most``) highest-scoring
    ``candidates`` (a bool mask; scores in [0, 1)), fewer if there are fewer candidates. No size
    read from the data."""
    ranked = torch.where(candidates, scores, -1.0)
    values, order = ranked.topk(min(most, ranked.numel()))
    chosen = (values >= 0) & (torch.arange(len(values), device=candidates.device) < k)
    return torch.zeros_like(candidates, dtype=torch.uint8).index_put_((order,), chosen.to(torch.uint8))


class RandTopkSampler(BalancedPositiveNegativeSampler):
    """``BalancedPositiveNegativeSampler`` by random scores and top-k: per image the same numbers of
    positives and negatives, each a uniformly random subset as torchvision's ``randperm`` picks
    it, with no size read from the data. ``scores_fn`` (tests) gives the random scores of an
    image's candidates (default ``torch.rand``); the scores pick the highest-scoring ones."""

    scores_fn = None

    def __call__(self, matched_idxs):
        if not matched_idxs or not active(self, matched_idxs[0]):
            return BalancedPositiveNegativeSampler.__call__(self, matched_idxs)
        pos_idx, neg_idx = [], []
        for matched in matched_idxs:
            positive, negative = matched >= 1, matched == 0
            scores = (self.scores_fn or (lambda m: torch.rand(m.shape, device=m.device)))(matched)
            most_pos = int(self.batch_size_per_image * self.positive_fraction)
            num_pos = positive.sum().clamp(max=most_pos)
            pos_idx.append(_first_k_by_score(positive, scores, num_pos, most_pos))
            neg_idx.append(_first_k_by_score(negative, scores, self.batch_size_per_image - num_pos,
                                             self.batch_size_per_image))
        return pos_idx, neg_idx


def _rpn_compute_loss(self, objectness, pred_bbox_deltas, labels, regression_targets):
    """``RegionProposalNetwork.compute_loss`` over the sampled anchors' masks: the box loss summed
    over the positives, the objectness loss averaged over positives and negatives."""
    sampled_pos, sampled_neg = self.fg_bg_sampler(labels)
    pos, neg = torch.cat(sampled_pos).bool(), torch.cat(sampled_neg).bool()
    sampled = (pos | neg).to(objectness.dtype)
    count = sampled.sum()
    box_loss = F.smooth_l1_loss(pred_bbox_deltas, torch.cat(regression_targets), beta=1 / 9, reduction="none")
    box_loss = torch.where(pos[:, None], box_loss, 0.0).sum() / count  # where: not-sampled values may be inf
    bce = F.binary_cross_entropy_with_logits(objectness.flatten(), torch.cat(labels), reduction="none")
    return torch.where(sampled.bool(), bce, 0.0).sum() / count, box_loss


# ----- the model's forward -----------------------------------------------------------------------

def _generalized_rcnn_forward(self, images, targets=None):
    """``GeneralizedRCNN.forward`` whose check of the targets' boxes (positive width and height)
    runs on the device (``torch._assert_async``) instead of reading a flag per image."""
    if self.training and targets is None:
        raise ValueError("targets should not be none when in training mode")
    original_image_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
    images, targets = self.transform(images, targets)
    for i, target in enumerate(targets or []):
        boxes = target["boxes"]
        torch._assert_async((boxes[:, 2:] > boxes[:, :2]).all(),
                            f"All bounding boxes should have positive height and width (target at index {i}).")
    features = self.backbone(images.tensors)
    if isinstance(features, torch.Tensor):
        features = collections.OrderedDict([("0", features)])
    proposals, proposal_losses = self.rpn(images, features, targets)
    detections, detector_losses = self.roi_heads(features, proposals, images.image_sizes, targets)
    detections = self.transform.postprocess(detections, images.image_sizes, original_image_sizes)
    losses = {**detector_losses, **proposal_losses}
    return self.eager_outputs(losses, detections)


def _torch_choice(self, k):
    """One size: no random draw (torchvision reads a CPU random number even then)."""
    return k[0] if len(k) == 1 else type(self).torch_choice(self, k)


def _is_cuda(tree):
    return next((t.is_cuda for t in pytree.tree_leaves(tree) if torch.is_tensor(t)), False)


def active(owner, tree):
    """Whether ``owner``'s sync-free code runs on ``tree``'s tensors: its ``sync_free`` mode is True,
    or "auto" and the tensors are on a GPU (on the CPU a sync costs nothing, and torchvision's
    code is faster there: one NMS over a batch costs more than one per image)."""
    mode = vars(owner).get("sync_free", False)
    return mode is True or (mode == "auto" and _is_cuda(tree))


def _bind(owner, name, function, mode):
    """``owner.name`` becomes ``function`` while ``active``, else the class's own method."""
    stock = getattr(type(owner), name)

    def method(self, *args, **kwargs):
        return (function if active(self, (args, kwargs)) else stock)(self, *args, **kwargs)

    method.__wrapped__ = function
    owner.sync_free = mode
    setattr(owner, name, types.MethodType(method, owner))


def _parts(model):
    """The objects ``make_sync_free`` changes: the model, its transform, RPN, RoI heads, their
    matchers and samplers (not modules), and RoI poolers."""
    rpn, heads = getattr(model, "rpn", None), getattr(model, "roi_heads", None)
    parts = [model, getattr(model, "transform", None), rpn, heads]
    for owner in (rpn, heads):
        parts += [getattr(owner, "proposal_matcher", None), getattr(owner, "fg_bg_sampler", None)]
    parts += [getattr(heads, n, None) for n in ("box_roi_pool", "mask_roi_pool", "keypoint_roi_pool")]
    return [p for p in parts if p is not None]


def make_sync_free(model, mode="auto", exact_sampling=False):
    """Install this module's sync-free replacements on ``model`` (a torchvision R-CNN with its own
    RPN and RoI heads; other models are left alone): see the module's docstring. ``mode``: True
    (always), "auto" (on CUDA tensors only) or False (nothing installed). ``exact_sampling`` keeps
    torchvision's samplers and random stream. Same results as stock torchvision up to float
    rounding, except the samplers' random choices (and the random stream: with one training
    size, the transform's random choice of it is skipped). Returns ``model``; ``undo_sync_free`` (or
    ``fast_layers.as_reference_model``) undoes it."""
    rpn, heads = getattr(model, "rpn", None), getattr(model, "roi_heads", None)
    if not mode or not isinstance(model, GeneralizedRCNN) or not isinstance(rpn, RegionProposalNetwork) or (
            not isinstance(heads, RoIHeads)):
        return model
    _bind(model, "forward", _generalized_rcnn_forward, mode)
    if not exact_sampling:  # torchvision's random stream draws a number there
        _bind(model.transform, "torch_choice", _torch_choice, mode)
    _bind(rpn, "filter_proposals", _filter_proposals, mode)
    _bind(rpn, "compute_loss", _rpn_compute_loss, mode)
    _bind(heads, "postprocess_detections", _postprocess_detections, mode)
    for matcher in (rpn.proposal_matcher, heads.proposal_matcher):
        _bind(matcher, "set_low_quality_matches_", _set_low_quality_matches, mode)
    for pool in _parts(model)[-3:]:
        if isinstance(pool, MultiScaleRoIAlign):
            pool.sync_free = mode
            if type(pool) is MultiScaleRoIAlign:
                pool.__class__ = MultiLevelRoIAlign
    for sampler in (rpn.fg_bg_sampler, heads.fg_bg_sampler):
        if not exact_sampling and type(sampler) is BalancedPositiveNegativeSampler:
            sampler.sync_free, sampler.__class__ = mode, RandTopkSampler
    return model


def undo_sync_free(model):
    """Undo ``make_sync_free``: torchvision's methods, samplers and poolers.
    Returns ``model``."""
    for part in _parts(model):
        for name in INSTANCE_METHODS:
            if hasattr(vars(part).get(name), "__wrapped__"):
                delattr(part, name)
        if type(part) is MultiLevelRoIAlign:
            part.__class__ = MultiScaleRoIAlign
        if type(part) is RandTopkSampler:
            part.__class__ = BalancedPositiveNegativeSampler
        vars(part).pop("sync_free", None)
    return model
