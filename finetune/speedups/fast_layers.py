"""This project's speed-ups for torchvision's detection models, and the code that undoes them.

    from finetune.speedups import fast_layers
    fast_layers.speed_up_model(model)        # same detections, less time (docs/speed.md)
    fast_layers.as_reference_model(model)    # back to stock torchvision (for comparisons)

Each change keeps the results (equal masks and detections; the same function up to float
rounding) and is applied to one model instance, never to torchvision's classes:

* ``FastMaskPasteTransform`` (``finetune.speedups.mask_paste``): Mask R-CNN masks pasted into
  one preallocated tensor (torchvision builds a full-image tensor per detection, then stacks them);
* ``fold_frozen_batchnorm``: the frozen BatchNorm of ResNet bottlenecks folded into their
  convolutions at run time;
* ``fast_roi_align`` / ``FastMultiScaleRoIAlign``: CPU RoI pooling as one weighted gather
  (``F.embedding_bag``), forward and backward several times faster than torchvision's one-core
  kernel, the same values and gradients up to float rounding;
* one copy of the pooled feature maps in the poolers' layout, shared by the box and mask poolers.

The memory format and the opt-in bfloat16 backbone of an evaluation are in
``finetune.speedups.inference``.

``speed_up_model`` also installs ``finetune.speedups.sync_free``'s paths (on a GPU by default).

Private torchvision APIs used here: ``torchvision.ops.poolers``' ``_convert_to_roi_format``,
``_filter_input`` and ``_setup_scales``, and the ``MultiScaleRoIAlign`` attributes
``FastMultiScaleRoIAlign.forward`` reads (``scales``, ``map_levels``, ``canonical_scale``,
``canonical_level``). Checked against torchvision 0.29.1 (torch 2.14.1) and 0.26.0
(torch 2.11.0).
"""

import types

import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.models.resnet import Bottleneck
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

from finetune.speedups import sync_free as sync_free_paths
from finetune.speedups.mask_paste import FastMaskPasteTransform
from finetune.speedups.sync_free import bilinear_taps as _bilinear_taps


def _conv_frozen_bn(conv, bn, x):
    """``bn(conv(x))`` for a frozen BatchNorm, computed as one convolution with scaled weights."""
    scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    weight = conv.weight * scale.reshape(-1, 1, 1, 1)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _folded_bottleneck_forward(self, x):
    """torchvision's ``Bottleneck.forward`` with each conv + frozen BN done as one conv."""
    out = self.relu(_conv_frozen_bn(self.conv1, self.bn1, x))
    out = self.relu(_conv_frozen_bn(self.conv2, self.bn2, out))
    out = _conv_frozen_bn(self.conv3, self.bn3, out)
    if self.downsample is None:
        identity = x
    else:
        identity = _conv_frozen_bn(self.downsample[0], self.downsample[1], x)
    out += identity
    return self.relu(out)


def _foldable(block):
    if not isinstance(block, Bottleneck):
        return False
    pairs = [(block.conv1, block.bn1), (block.conv2, block.bn2), (block.conv3, block.bn3)]
    if block.downsample is not None:
        if not (isinstance(block.downsample, torch.nn.Sequential) and len(block.downsample) == 2):
            return False
        pairs.append((block.downsample[0], block.downsample[1]))
    return all(isinstance(c, torch.nn.Conv2d) and isinstance(b, FrozenBatchNorm2d) for c, b in pairs)


def fold_frozen_batchnorm(model):
    """Fold every frozen BatchNorm of the model's ResNet bottlenecks into the preceding conv.

    The pretrained layout (``weights="DEFAULT"``/``"layout"``) normalises with
    ``FrozenBatchNorm2d``: a multiply and an add over every activation, forward and backward.
    Scaling the (small) conv weights instead gives the same function -- to float rounding --
    for less backbone time on CPU. Only the bottlenecks' ``forward`` is replaced (on
    these instances); modules, parameters and the state dict stay as they are, and gradients
    reach the conv weights through the scaling. Blocks with trainable BatchNorm are left alone.
    Returns the number of blocks folded.
    """
    folded = 0
    for block in model.modules():
        if _foldable(block):
            block.forward = types.MethodType(_folded_bottleneck_forward, block)
            folded += 1
    return folded


def _roi_heads_forward_one_layout(self, features, proposals, image_shapes, targets=None):
    """``RoIHeads.forward`` with the pooled feature maps converted to the poolers' layout once.

    ``fast_roi_align`` reads channels_last (NHWC) maps on the CPU; torchvision's kernels elsewhere
    read contiguous NCHW. One conversion shared by the box and the mask pooler (none for a
    channels_last model on the CPU) instead of one per pooler, and one per gradient.
    """
    names = set(self.box_roi_pool.featmap_names)
    if self.mask_roi_pool is not None:
        names |= set(self.mask_roi_pool.featmap_names)

    def layout(v):
        return v.contiguous(memory_format=torch.channels_last) if v.device.type == "cpu" else v.contiguous()

    features = features.__class__((k, layout(v) if k in names else v) for k, v in features.items())
    return type(self).forward(self, features, proposals, image_shapes, targets)


def _roi_align_by_embedding_bag(features, rois, output_size, spatial_scale, sampling_ratio):
    """roi_align as one weighted gather: each output bin is the weighted sum of the
    ``4 * sampling_ratio**2`` feature-map pixels its samples interpolate from, which is
    ``F.embedding_bag`` (mode "sum", per-sample weights) over the (N*H*W, C) table of an NHWC
    map. torchvision's CPU kernel recomputes the weights for every channel and scatters the
    gradient one value at a time on one core; here the weights are computed once per RoI and
    both passes are torch's vectorised, multi-threaded embedding-bag kernels.
    """
    n, c, h, w = features.shape
    (ph, pw), k, r = output_size, rois.shape[0], sampling_ratio
    image = rois[:, 0].long()
    x0, y0, x1, y1 = (rois[:, i] * spatial_scale for i in range(1, 5))
    iy, wy = _bilinear_taps(y0, (y1 - y0).clamp(min=1.0), ph, r, h)  # (K, ph, r, 2)
    ix, wx = _bilinear_taps(x0, (x1 - x0).clamp(min=1.0), pw, r, w)  # (K, pw, r, 2)
    # every (bin y, bin x, sample y, tap y, sample x, tap x): a row of the (N*H*W, C) table
    index = (image.view(k, 1, 1, 1, 1, 1, 1) * (h * w) + iy.view(k, ph, 1, r, 2, 1, 1) * w
             + ix.view(k, 1, pw, 1, 1, r, 2))
    weight = wy.view(k, ph, 1, r, 2, 1, 1) * wx.view(k, 1, pw, 1, 1, r, 2) * (1.0 / (r * r))
    table = features.permute(0, 2, 3, 1).reshape(n * h * w, c)  # a view for channels_last maps
    taps = 4 * r * r
    pooled = F.embedding_bag(index.reshape(k * ph * pw, taps), table, mode="sum",
                             per_sample_weights=weight.reshape(k * ph * pw, taps).to(table.dtype))
    return pooled.view(k, ph, pw, c).permute(0, 3, 1, 2)


def fast_roi_align(features, rois, output_size, spatial_scale, sampling_ratio):
    """``torchvision.ops.roi_align(features, rois, output_size, spatial_scale, sampling_ratio)``
    (``aligned=False``, as Faster/Mask R-CNN use it), on the CPU computed by
    ``_roi_align_by_embedding_bag``: the same values and gradients up to float rounding
    (summation order), deterministic, several times faster in both directions. Fastest on
    channels_last maps. Under CPU autocast it does what torchvision's autocast kernel does (pool
    in float32, return the features' dtype). Other devices, dtypes, adaptive sampling
    (``sampling_ratio <= 0``) and boxes given as a list of tensors go to torchvision's op.
    """
    output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if features.device.type != "cpu" or sampling_ratio <= 0 or not torch.is_tensor(rois) or rois.dim() != 2:
        return torchvision.ops.roi_align(features, rois, output_size, spatial_scale, sampling_ratio)
    if torch.is_autocast_enabled("cpu") and features.dtype in (torch.float32, torch.bfloat16, torch.float16):
        with torch.autocast("cpu", enabled=False):
            pooled = _roi_align_by_embedding_bag(features.float(), rois.float(), output_size, spatial_scale,
                                                 sampling_ratio)
        return pooled.to(features.dtype)
    if features.dtype not in (torch.float32, torch.float64) or torch.is_autocast_enabled("cpu"):
        return torchvision.ops.roi_align(features, rois, output_size, spatial_scale, sampling_ratio)
    return _roi_align_by_embedding_bag(features, rois.to(features.dtype), output_size, spatial_scale, sampling_ratio)


class FastMultiScaleRoIAlign(MultiScaleRoIAlign):
    """``MultiScaleRoIAlign`` (same levels, same outputs up to float rounding) pooling with
    ``fast_roi_align``."""

    def forward(self, x, boxes, image_shapes):
        if sync_free_paths.active(self, x):  # all levels at once: no per-level torch.where
            return sync_free_paths.pool_all_levels(self, x, boxes, image_shapes)
        features = _filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(features, image_shapes, self.canonical_scale,
                                                         self.canonical_level)
        rois = _convert_to_roi_format(boxes)
        if len(features) == 1:
            return fast_roi_align(features[0], rois, self.output_size, self.scales[0], self.sampling_ratio)
        levels = self.map_levels(boxes)
        result = features[0].new_zeros((len(rois), features[0].shape[1]) + tuple(self.output_size))
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            idx = torch.where(levels == level)[0]
            pooled = fast_roi_align(feature, rois[idx], self.output_size, scale, self.sampling_ratio)
            result[idx] = pooled.to(result.dtype)
        return result


def speed_up_model(model, sync_free="auto"):
    """This project's model defaults, all keeping the results (equal masks and detections; the
    same function up to float rounding): fast mask pasting (Mask R-CNN), folded frozen
    BatchNorm, one layout conversion of the pooled features for both RoI poolers, and RoI
    pooling by weighted gathers on the CPU.

    ``sync_free``: the training step and evaluation with almost no host syncs
    (``finetune.speedups.sync_free``; the same results up to float rounding, another random
    stream for the samplers): "auto" on CUDA tensors only, True also on the CPU (to count them),
    False never.

    Only this model's transform and RoI pooler classes and some of its modules' ``forward``
    (as instance attributes) are changed; the state dict is untouched. Returns ``model``.
    """
    transform = getattr(model, "transform", None)
    if type(transform) is GeneralizedRCNNTransform:
        transform.__class__ = FastMaskPasteTransform
    fold_frozen_batchnorm(model)
    roi_heads = getattr(model, "roi_heads", None)
    if isinstance(roi_heads, RoIHeads) and isinstance(getattr(roi_heads, "box_roi_pool", None), MultiScaleRoIAlign):
        roi_heads.forward = types.MethodType(_roi_heads_forward_one_layout, roi_heads)
        for name in ("box_roi_pool", "mask_roi_pool", "keypoint_roi_pool"):
            if type(getattr(roi_heads, name, None)) is MultiScaleRoIAlign:
                getattr(roi_heads, name).__class__ = FastMultiScaleRoIAlign
    sync_free_paths.make_sync_free(model, sync_free)
    return model


def as_reference_model(model):
    """Undo ``speed_up_model``: torchvision's stock transform (mask pasting), bottleneck forward,
    RoI heads forward and RoI poolers, and none of the sync-free paths. Returns ``model``."""
    sync_free_paths.undo_sync_free(model)
    if isinstance(getattr(model, "transform", None), GeneralizedRCNNTransform):
        model.transform.__class__ = GeneralizedRCNNTransform
    for module in model.modules():
        # folded frozen BatchNorm, shared RoI-feature layout -> the class's forward
        module.__dict__.pop("forward", None)
        if isinstance(module, MultiScaleRoIAlign):
            module.__class__ = MultiScaleRoIAlign  # torchvision's pooling
    return model
