"""This project's speed-ups for torchvision's detection models, and the code that undoes them.

    import speedups
    speedups.speed_up_model(model)        # same detections, less time (docs/speed.md)
    speedups.as_reference_model(model)    # back to stock torchvision (for comparisons)

Each change keeps the results (equal masks and detections; the same function up to float
rounding) and is applied to one model instance, never to torchvision's classes:

* ``paste_masks_in_image`` / ``FastMaskPasteTransform``: Mask R-CNN masks pasted into one
  preallocated tensor (torchvision builds a full-image tensor per detection, then stacks them);
* ``fold_frozen_batchnorm``: the frozen BatchNorm of ResNet bottlenecks folded into their
  convolutions at run time;
* ``fast_roi_align`` / ``FastMultiScaleRoIAlign``: CPU RoI pooling as one weighted gather
  (``F.embedding_bag``), forward and backward several times faster than torchvision's one-core
  kernel, the same values and gradients up to float rounding;
* one copy of the pooled feature maps in the poolers' layout, shared by the box and mask poolers;
* ``use_channels_last`` picks the memory format (channels_last on CPUs with AVX-512; on AVX2 CPUs for
  inference only), ``inference_speedups`` switches to the inference one for an evaluation.

Opt-in, since it rounds differently: ``bfloat16_backbone`` (``--eval-bf16``) runs the backbone
under bfloat16 autocast during evaluation, the heads in float32.

Private torchvision APIs are used here and nowhere else: ``torchvision.ops.poolers``'
``_convert_to_roi_format``, ``_filter_input`` and ``_setup_scales``, and
``roi_heads.expand_boxes``. Checked against torchvision 0.29.1 (torch 2.14.1) and 0.26.0
(torch 2.11.0).
"""

import contextlib
import types

import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.detection.roi_heads import RoIHeads, expand_boxes
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes, resize_keypoints
from torchvision.models.resnet import Bottleneck
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign


def _pasted_patches(masks, boxes, img_shape, padding=1):
    """Per detection, the values torchvision's pasting puts inside the image, and only those:
    yields ``(i, (y0, y1, x0, x1), patch)`` with ``patch`` (y1 - y0, x1 - x0) float, for the part
    of the detection's expanded box inside the image (detections whose box lies outside yield
    nothing). Everything outside that region is zero in torchvision's full-image mask.

    Same padding, box expansion, rounding and bilinear resize as
    ``torchvision.models.detection.roi_heads.paste_masks_in_image``.
    """
    num, im_h, im_w = masks.shape[0], int(img_shape[0]), int(img_shape[1])
    if num == 0:
        return
    side = masks.shape[-1]
    padded = F.pad(masks, (padding,) * 4)
    scale = float(side + 2 * padding) / side
    # the expanded boxes as Python ints, in one transfer instead of 4+ per detection
    int_boxes = expand_boxes(boxes, scale).to(dtype=torch.int64).tolist()
    for i, (x0, y0, x1, y1) in enumerate(int_boxes):
        xa, xb = max(x0, 0), min(x1 + 1, im_w)  # the part of the box inside the image
        ya, yb = max(y0, 0), min(y1 + 1, im_h)
        if xa >= xb or ya >= yb:
            continue
        size = (max(y1 - y0 + 1, 1), max(x1 - x0 + 1, 1))
        resized = F.interpolate(padded[i : i + 1], size=size, mode="bilinear", align_corners=False)[0, 0]
        yield i, (ya, yb, xa, xb), resized[ya - y0 : yb - y0, xa - x0 : xb - x0]


def paste_masks_in_image(masks, boxes, img_shape, padding=1):
    """Paste (N, 1, M, M) mask probabilities into (N, 1, H, W) images at their boxes.

    Gives the same values as ``torchvision.models.detection.roi_heads.paste_masks_in_image``,
    but writes every mask straight into one zero-filled output: torchvision builds a full-image
    tensor per detection and then stacks them, i.e. allocates and copies the output twice.
    """
    out = masks.new_zeros((masks.shape[0], 1, int(img_shape[0]), int(img_shape[1])))
    for i, (ya, yb, xa, xb), patch in _pasted_patches(masks, boxes, img_shape, padding):
        out[i, 0, ya:yb, xa:xb] = patch
    return out


def masks_to_rles(masks, boxes, img_shape, threshold=0.5, keep=None, padding=1):
    """COCO RLEs of ``pasted mask > threshold``, one per detection (None where ``keep`` is False).

    Equal to encoding torchvision's full-image masks (``paste_masks_in_image(...)[:, 0] > 0.5``,
    as COCO evaluation does), but each mask is pasted only inside its box and encoded through
    one reused image-sized uint8 buffer: memory grows with the image's area once, not with
    area x detections (100 float masks of a 12-megapixel photo are 4.8 GB). ``counts`` are str,
    as in COCO result files.
    """
    import numpy as np
    from pycocotools import mask as coco_mask

    im_h, im_w = int(img_shape[0]), int(img_shape[1])
    keep = [True] * masks.shape[0] if keep is None else [bool(k) for k in keep]
    buffer = np.zeros((im_h, im_w), dtype=np.uint8, order="F")
    empty = coco_mask.encode(buffer)
    empty["counts"] = empty["counts"].decode("ascii")
    rles = [dict(empty) if k else None for k in keep]
    index = [i for i, k in enumerate(keep) if k]
    chosen = torch.tensor(index, dtype=torch.long, device=masks.device)
    for j, (ya, yb, xa, xb), patch in _pasted_patches(masks[chosen], boxes[chosen], img_shape, padding):
        region = buffer[ya:yb, xa:xb]
        region[...] = (patch > threshold).cpu().numpy()
        rle = coco_mask.encode(buffer)
        rle["counts"] = rle["counts"].decode("ascii")
        rles[index[j]] = rle
        region[...] = 0
    return rles


class FastMaskPasteTransform(GeneralizedRCNNTransform):
    """``GeneralizedRCNNTransform`` whose ``postprocess`` pastes masks with ``paste_masks_in_image``.

    Installed on one model by ``speed_up_model`` (the transform's class is swapped), so other
    models and torchvision itself are untouched. With ``compact_masks(model)``, predictions
    carry ``masks_rle`` (``masks_to_rles``) instead of full-image ``masks``.
    """

    def postprocess(self, result, image_shapes, original_image_sizes):
        # type: (list[dict[str, torch.Tensor]], list[tuple[int, int]], list[tuple[int, int]]) -> list[dict[str, torch.Tensor]]
        if self.training:
            return result
        rle = self.__dict__.get("rle_min_score")  # None: full-image masks, as torchvision
        for pred, im_s, o_im_s in zip(result, image_shapes, original_image_sizes):
            pred["boxes"] = resize_boxes(pred["boxes"], im_s, o_im_s)
            if "masks" in pred and rle is not None:
                masks = pred.pop("masks")
                pred["masks_rle"] = masks_to_rles(masks, pred["boxes"], o_im_s, keep=(pred["scores"] >= rle).tolist())
            elif "masks" in pred:
                pred["masks"] = paste_masks_in_image(pred["masks"], pred["boxes"], o_im_s)
            if "keypoints" in pred:
                pred["keypoints"] = resize_keypoints(pred["keypoints"], im_s, o_im_s)
        return result


def compact_masks(model, min_score=0.0):
    """Mask R-CNN predictions with masks as COCO RLEs (``masks_rle``, of mask > 0.5) instead of
    (N, 1, H, W) float masks, for detections scoring at least ``min_score`` (None: back to full
    masks). For big images: the full masks of 100 detections on a 12-megapixel photo take 4.8 GB.
    Needs ``speed_up_model`` first; returns ``model``."""
    transform = getattr(model, "transform", None)
    if isinstance(transform, FastMaskPasteTransform):
        if min_score is None:
            transform.__dict__.pop("rle_min_score", None)
        else:
            transform.rle_min_score = float(min_score)
    return model


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


def _bilinear_taps(start, length, bins, samples, size):
    """Along one axis, for every RoI, bin and sample: the two neighbouring pixel indices and their
    bilinear weights, as torchvision's CPU ``roi_align`` (``aligned=False``) computes them.

    ``start``/``length``: (K,) RoI start and length in feature-map pixels. Returns ``index`` and
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
    index = image.view(k, 1, 1, 1, 1, 1, 1) * (h * w) + iy.view(k, ph, 1, r, 2, 1, 1) * w + ix.view(k, 1, pw, 1, 1, r, 2)
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
        from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

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


def speed_up_model(model):
    """This project's model defaults, all keeping the results (equal masks and detections; the
    same function up to float rounding): fast mask pasting (Mask R-CNN), folded frozen
    BatchNorm, one layout conversion of the pooled features for both RoI poolers, and RoI
    pooling by weighted gathers on the CPU.

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
    return model


@contextlib.contextmanager
def bfloat16_backbone(model, enabled=True):
    """Within the block, ``model.backbone`` (ResNet + FPN: most of the convolutions) runs under
    CPU bfloat16 autocast and hands float32 feature maps to the heads, so boxes, scores and masks
    are still computed in float32 (autocast over the whole model would decode boxes in bfloat16,
    whose 8-bit mantissa moves a box corner at 800 px by up to 2-4 px). For evaluation only:
    the training step keeps ``--amp``'s meaning. No effect off the CPU or with ``enabled`` False.
    """
    backbone = getattr(model, "backbone", None)
    if not enabled or backbone is None:
        yield model
        return
    had_own = "forward" in vars(backbone)
    plain = backbone.forward

    def forward(x):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=x.device.type == "cpu"):
            features = plain(x)
        return type(features)((k, v.float()) for k, v in features.items())

    backbone.forward = forward
    try:
        yield model
    finally:
        if had_own:
            backbone.forward = plain
        else:
            del backbone.forward


def use_channels_last(device, choice="auto", training=True):
    """Whether to train (``training``) or evaluate/predict in channels_last memory format.

    ``choice``: "on", "off" or "auto": on a CPU whose kernels use AVX-512, channels_last, where
    oneDNN's convolutions are faster in NHWC; on CPUs with AVX2 at most, NCHW to train (the
    tutorial's 800-px training step was slower in NHWC: its backward convolutions) and
    channels_last to evaluate (its forward ones are faster); off on other devices (docs/speed.md).
    """
    if choice not in ("auto", "on", "off"):
        raise ValueError(f"channels_last choice must be auto, on or off, got {choice!r}")
    if choice == "auto":
        return torch.device(device).type == "cpu" and (
            not training or torch.backends.cpu.get_cpu_capability() == "AVX512")
    return choice == "on"


@contextlib.contextmanager
def inference_speedups(model, device, eval_bf16=False, channels_last="auto"):
    """Within the block, ``model`` (not DDP-wrapped) evaluates as fast as this CPU allows: in the
    memory format ``use_channels_last`` picks for inference where it differs from training's (the
    model goes back to its training layout on leaving, also on an exception; the optimizer's
    parameters stay the same objects), and with the bfloat16 backbone under ``eval_bf16``."""
    train_cl = use_channels_last(device, channels_last)
    switch = use_channels_last(device, channels_last, training=False) != train_cl
    if switch:
        model.to(memory_format=torch.contiguous_format if train_cl else torch.channels_last)
    try:
        with bfloat16_backbone(model, eval_bf16):
            yield model
    finally:
        if switch:
            model.to(memory_format=torch.channels_last if train_cl else torch.contiguous_format)


def as_reference_model(model):
    """Undo ``speed_up_model``: torchvision's stock transform (mask pasting), bottleneck forward,
    RoI heads forward and RoI poolers. Returns ``model``."""
    if isinstance(getattr(model, "transform", None), GeneralizedRCNNTransform):
        model.transform.__class__ = GeneralizedRCNNTransform
    for module in model.modules():
        module.__dict__.pop("forward", None)  # folded frozen BatchNorm, shared RoI-feature layout -> the class's forward
        if isinstance(module, MultiScaleRoIAlign):
            module.__class__ = MultiScaleRoIAlign  # torchvision's pooling
    return model
