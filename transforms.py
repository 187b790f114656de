"""Paired image/target transforms for detection and instance segmentation.

A re-implementation of the helpers in torchvision's ``references/detection/transforms.py``
that the object detection finetuning tutorial imports as ``import transforms as T``.

Every transform is called as ``image, target = t(image, target)``. ``image`` is a
``(C, H, W)`` tensor (plain or ``tv_tensors.Image``) or, for the transforms that the
reference also runs on them, a PIL image. ``target`` is ``None`` or a dict with any of

* ``boxes``     ``(N, 4)`` float, XYXY in pixel coordinates (plain or ``tv_tensors.BoundingBoxes``),
* ``masks``     ``(N, H, W)`` (plain or ``tv_tensors.Mask``),
* ``keypoints`` ``(N, K, 3)`` as ``(x, y, visibility)``,
* ``labels``, ``area``, ``iscrowd`` (one value per instance) and ``image_id``.

Conventions:

* Transforms never modify the tensors they are given; they return a new target dict.
* tv_tensor types (and the ``canvas_size`` of ``BoundingBoxes``) are kept.
* Geometric transforms move ``boxes``, ``masks`` and ``keypoints`` together. When a
  transform drops instances, every per-instance entry is dropped with them.
  Keypoints that leave the image become invisible (COCO convention: ``x = y = v = 0``).
* ``area`` is carried along but, as in the reference, only recomputed by
  ``SimpleCopyPaste``; COCO evaluation reads it from untransformed validation images.
* Randomness comes from torch's global RNG, so ``torch.manual_seed`` makes runs repeatable.
"""

import numbers
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torchvision
from torch import Tensor, nn
from torchvision import tv_tensors
from torchvision.transforms import ColorJitter, InterpolationMode
from torchvision.transforms import functional as F

Target = Optional[Dict[str, Tensor]]

# Entries of a target that hold one row per instance and are filtered together.
_INSTANCE_KEYS = ("boxes", "labels", "masks", "keypoints", "area", "iscrowd")

# COCO person keypoints: index of the mirror-image keypoint (left eye <-> right eye, ...).
_COCO_PERSON_FLIP_ORDER = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]


# --------------------------------------------------------------------------- helpers


def _plain(tensor: Tensor) -> Tensor:
    """View a (possibly tv_tensor) tensor as a plain ``torch.Tensor``."""
    return tensor.as_subclass(Tensor)


def _rewrap(new: Tensor, old: Tensor, **metadata) -> Tensor:
    """Give ``new`` the tv_tensor type of ``old``; ``metadata`` overrides BoundingBoxes fields."""
    if isinstance(old, tv_tensors.BoundingBoxes):
        return tv_tensors.wrap(new, like=old, **metadata)
    if isinstance(old, tv_tensors.TVTensor):
        return tv_tensors.wrap(new, like=old)
    return new


def _check_image(image):
    """Accept PIL images and 2-D/3-D tensors; a 2-D tensor gets a channel dimension."""
    if isinstance(image, Tensor):
        if image.ndim not in (2, 3):
            raise ValueError(f"image should be 2/3 dimensional. Got {image.ndim} dimensions.")
        if image.ndim == 2:
            image = image.unsqueeze(0)
    return image


def _check_boxes(target: Target) -> None:
    boxes = target.get("boxes") if target is not None else None
    if isinstance(boxes, tv_tensors.BoundingBoxes) and boxes.format != tv_tensors.BoundingBoxFormat.XYXY:
        raise ValueError(f"boxes must be in XYXY format, got {boxes.format}")


def _select(target: Dict[str, Tensor], keep: Tensor) -> Dict[str, Tensor]:
    """Keep the instances selected by ``keep`` (bool mask or indices) in every per-instance entry."""
    out = dict(target)
    for key in _INSTANCE_KEYS:
        if key in out:
            out[key] = _rewrap(_plain(out[key])[keep], out[key])
    return out


def _transform_target(
    target: Target,
    canvas_size: Tuple[int, int],
    masks_fn,
    scale: Tuple[float, float] = (1.0, 1.0),
    offset: Tuple[float, float] = (0.0, 0.0),
    clamp_boxes: bool = False,
) -> Target:
    """Move a target onto a new canvas of ``canvas_size = (height, width)``.

    Boxes and keypoints are mapped by ``x -> x * scale[0] + offset[0]`` and
    ``y -> y * scale[1] + offset[1]`` (scales must be positive); masks by ``masks_fn``,
    which gets and returns a plain ``(N, H, W)`` tensor. ``clamp_boxes`` clips boxes to
    the canvas (for crops).
    """
    if target is None:
        return None
    _check_boxes(target)
    height, width = canvas_size
    out = dict(target)

    if "boxes" in target:
        boxes = _plain(target["boxes"])
        xs = boxes[:, 0::2] * scale[0] + offset[0]
        ys = boxes[:, 1::2] * scale[1] + offset[1]
        if clamp_boxes:
            xs = xs.clamp(0, width)
            ys = ys.clamp(0, height)
        new_boxes = torch.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], dim=1).to(boxes.dtype)
        out["boxes"] = _rewrap(new_boxes, target["boxes"], canvas_size=(height, width))

    if "masks" in target:
        out["masks"] = _rewrap(masks_fn(_plain(target["masks"])), target["masks"])

    if "keypoints" in target:
        kps = _plain(target["keypoints"]).clone()
        kps[..., 0] = kps[..., 0] * scale[0] + offset[0]
        kps[..., 1] = kps[..., 1] * scale[1] + offset[1]
        x, y = kps[..., 0], kps[..., 1]
        outside = (x < 0) | (x >= width) | (y < 0) | (y >= height)
        kps[(kps[..., 2] == 0) | outside] = 0
        out["keypoints"] = _rewrap(kps, target["keypoints"])

    return out


def _resize_masks(masks: Tensor, size: Sequence[int]) -> Tensor:
    """Nearest-neighbour resize of ``(N, H, W)`` masks (``F.resize`` rejects N == 0)."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size))
    return F.resize(masks, list(size), interpolation=InterpolationMode.NEAREST, antialias=False)


def _resize(image, target: Target, size: Tuple[int, int], interpolation, antialias=True):
    """Resize image and target to ``size = (height, width)``."""
    _, orig_height, orig_width = F.get_dimensions(image)
    new_height, new_width = size
    resized = F.resize(image, [new_height, new_width], interpolation=interpolation, antialias=antialias)
    if isinstance(image, Tensor):
        resized = _rewrap(resized, image)
    target = _transform_target(
        target,
        canvas_size=(new_height, new_width),
        masks_fn=lambda masks: _resize_masks(masks, (new_height, new_width)),
        # the exact ratios after rounding the new size, so boxes stay on the mask edges
        scale=(new_width / orig_width, new_height / orig_height),
    )
    return resized, target


def _pad_image(image, padding: List[int], fill, padding_mode: str = "constant"):
    """Pad by ``[left, top, right, bottom]``; unlike ``F.pad``, takes a per-channel fill for tensors."""
    if isinstance(image, Tensor) and padding_mode == "constant" and not isinstance(fill, numbers.Number):
        left, top, right, bottom = padding
        height, width = image.shape[-2:]
        canvas = torch.empty(
            (*image.shape[:-2], height + top + bottom, width + left + right), dtype=image.dtype, device=image.device
        )
        canvas[...] = torch.as_tensor(fill, dtype=image.dtype, device=image.device).view(-1, 1, 1)
        canvas[..., top : top + height, left : left + width] = image
        return _rewrap(canvas, image)
    if not isinstance(image, Tensor) and not isinstance(fill, numbers.Number):
        fill = tuple(int(v) for v in fill)  # PIL wants integer colours
    padded = F.pad(image, padding, fill=fill, padding_mode=padding_mode)
    return _rewrap(padded, image) if isinstance(image, Tensor) else padded


def _crop_target(target: Target, top: int, left: int, height: int, width: int) -> Target:
    """Crop a target to the window ``(top, left, height, width)``, clipping boxes to it."""
    return _transform_target(
        target,
        canvas_size=(height, width),
        masks_fn=lambda masks: F.crop(masks, top, left, height, width),
        offset=(-left, -top),
        clamp_boxes=True,
    )


def _flip_coco_person_keypoints(kps: Tensor, width: int) -> Tensor:
    """Mirror ``(N, 17, 3)`` COCO person keypoints horizontally in an image of ``width``.

    Left and right keypoints swap places, so a flipped left eye is reported as the right
    eye. Invisible keypoints (visibility 0) get ``x = y = v = 0`` (COCO convention).
    """
    flipped = kps[:, _COCO_PERSON_FLIP_ORDER]  # advanced indexing copies
    flipped[..., 0] = width - flipped[..., 0]
    flipped[flipped[..., 2] == 0] = 0
    return flipped


# --------------------------------------------------------------------------- basic transforms


class Compose:
    """Apply paired transforms in order."""

    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, image, target: Target = None):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        lines = "".join(f"\n    {t}" for t in self.transforms)
        return f"{self.__class__.__name__}({lines}\n)"


class RandomHorizontalFlip(nn.Module):
    """Flip image, boxes, masks and keypoints left-right with probability ``p``.

    Boxes use continuous pixel coordinates: ``x1' = W - x2`` and ``x2' = W - x1``, so
    flipping twice is exact. (With boxes from ``masks_to_boxes``, whose ``x2`` is the
    index of the last pixel rather than its right edge, the flipped box sits 1 px to the
    right of ``masks_to_boxes`` of the flipped mask, as in the reference.)
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = p

    def forward(self, image, target: Target = None):
        if torch.rand(1).item() >= self.p:
            return image, target
        flipped = F.hflip(image)
        if isinstance(image, Tensor):
            flipped = _rewrap(flipped, image)
        if target is None:
            return flipped, None

        _check_boxes(target)
        _, _, width = F.get_dimensions(image)
        target = dict(target)
        if "boxes" in target:
            boxes = _plain(target["boxes"])
            new_boxes = boxes.clone()
            new_boxes[:, 0] = width - boxes[:, 2]
            new_boxes[:, 2] = width - boxes[:, 0]
            target["boxes"] = _rewrap(new_boxes, target["boxes"])
        if "masks" in target:
            target["masks"] = _rewrap(_plain(target["masks"]).flip(-1), target["masks"])
        if "keypoints" in target:
            keypoints = _flip_coco_person_keypoints(_plain(target["keypoints"]), width)
            target["keypoints"] = _rewrap(keypoints, target["keypoints"])
        return flipped, target

    def extra_repr(self) -> str:
        return f"p={self.p}"


class PILToTensor(nn.Module):
    """PIL image -> ``uint8`` tensor ``(C, H, W)`` (values unchanged)."""

    def forward(self, image, target: Target = None):
        return F.pil_to_tensor(image), target


class ToTensor(nn.Module):
    """PIL image or ``HWC`` ndarray -> float tensor in ``[0, 1]`` (the 2019 tutorial's transform)."""

    def forward(self, image, target: Target = None):
        return F.to_tensor(image), target


class ToDtype(nn.Module):
    """Convert the image to ``dtype``; with ``scale=True`` rescale values too (uint8 -> [0, 1])."""

    def __init__(self, dtype: torch.dtype, scale: bool = False):
        super().__init__()
        self.dtype = dtype
        self.scale = scale

    def forward(self, image: Tensor, target: Target = None):
        if not self.scale:
            return image.to(dtype=self.dtype), target
        return _rewrap(F.convert_image_dtype(image, self.dtype), image), target

    def extra_repr(self) -> str:
        return f"dtype={self.dtype}, scale={self.scale}"


class ConvertImageDtype(ToDtype):
    """Older reference name for ``ToDtype(dtype, scale=True)``."""

    def __init__(self, dtype: torch.dtype):
        super().__init__(dtype, scale=True)


# --------------------------------------------------------------------------- SSD-style augmentation


class RandomIoUCrop(nn.Module):
    """SSD random crop: a crop that overlaps at least one object by a sampled minimum IoU.

    Each attempt samples a minimum IoU from ``sampler_options`` (a value >= 1 means "leave
    the sample as it is"), then tries up to ``trials`` crops whose sides are
    ``[min_scale, max_scale]`` of the image's and whose aspect ratio is within
    ``[min_aspect_ratio, max_aspect_ratio]``. A crop is accepted when some box centres fall
    strictly inside it and one of those boxes has IoU >= the minimum with it; the
    objects whose centres lie inside are kept, their boxes clipped to the crop. If no
    trial succeeds, a new minimum IoU is sampled (so ``sampler_options`` should contain
    a value >= 1, as the default does, for the loop to be sure to end).
    """

    def __init__(
        self,
        min_scale: float = 0.3,
        max_scale: float = 1.0,
        min_aspect_ratio: float = 0.5,
        max_aspect_ratio: float = 2.0,
        sampler_options: Optional[List[float]] = None,
        trials: int = 40,
    ):
        super().__init__()
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.min_aspect_ratio = min_aspect_ratio
        self.max_aspect_ratio = max_aspect_ratio
        # Configuration of the original SSD (Liu et al., 2016).
        self.options = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0] if sampler_options is None else sampler_options
        self.trials = trials

    def _find_crop(self, boxes: Tensor, orig_h: int, orig_w: int, min_iou: float):
        """Return ``(top, left, height, width, kept)`` for an accepted crop, or None."""
        centre_x = 0.5 * (boxes[:, 0] + boxes[:, 2])
        centre_y = 0.5 * (boxes[:, 1] + boxes[:, 3])
        for _ in range(self.trials):
            r = self.min_scale + (self.max_scale - self.min_scale) * torch.rand(2)
            new_w = int(orig_w * r[0])
            new_h = int(orig_h * r[1])
            if new_w == 0 or new_h == 0 or not (self.min_aspect_ratio <= new_w / new_h <= self.max_aspect_ratio):
                continue

            r = torch.rand(2)
            left = int((orig_w - new_w) * r[0])
            top = int((orig_h - new_h) * r[1])
            right, bottom = left + new_w, top + new_h

            kept = (left < centre_x) & (centre_x < right) & (top < centre_y) & (centre_y < bottom)
            if not kept.any():
                continue
            crop_box = torch.tensor([[left, top, right, bottom]], dtype=boxes.dtype, device=boxes.device)
            if torchvision.ops.box_iou(boxes[kept], crop_box).max() < min_iou:
                continue
            return top, left, new_h, new_w, kept
        return None

    def forward(self, image, target: Target = None):
        if target is None or "boxes" not in target:
            raise ValueError("RandomIoUCrop needs a target with boxes.")
        _check_boxes(target)
        image = _check_image(image)
        _, orig_h, orig_w = F.get_dimensions(image)
        boxes = _plain(target["boxes"])
        if boxes.shape[0] == 0:  # no crop can overlap an object: the only outcome is "as is"
            return image, target

        while True:
            min_iou = self.options[int(torch.randint(len(self.options), (1,)))]
            if min_iou >= 1.0:
                return image, target
            crop = self._find_crop(boxes, orig_h, orig_w, min_iou)
            if crop is not None:
                break

        top, left, height, width, kept = crop
        cropped = F.crop(image, top, left, height, width)
        if isinstance(image, Tensor):
            cropped = _rewrap(cropped, image)
        return cropped, _crop_target(_select(target, kept), top, left, height, width)


class RandomZoomOut(nn.Module):
    """With probability ``p``, place the image at a random spot of a canvas ``r`` times larger.

    ``r`` is uniform in ``side_range``; the canvas is filled with ``fill`` (a number or
    one value per channel, default 0). Boxes, keypoints and masks move with the image.
    """

    def __init__(
        self,
        fill: Optional[Union[float, Sequence[float]]] = None,
        side_range: Tuple[float, float] = (1.0, 4.0),
        p: float = 0.5,
    ):
        super().__init__()
        if side_range[0] < 1.0 or side_range[0] > side_range[1]:
            raise ValueError(f"Invalid canvas side range provided {side_range}.")
        self.fill = 0 if fill is None else fill
        self.side_range = side_range
        self.p = p

    def forward(self, image, target: Target = None):
        image = _check_image(image)
        if torch.rand(1).item() >= self.p:
            return image, target

        _, orig_h, orig_w = F.get_dimensions(image)
        r = self.side_range[0] + torch.rand(1).item() * (self.side_range[1] - self.side_range[0])
        canvas_w, canvas_h = int(orig_w * r), int(orig_h * r)

        r = torch.rand(2)
        left = int((canvas_w - orig_w) * r[0])
        top = int((canvas_h - orig_h) * r[1])
        padding = [left, top, canvas_w - (left + orig_w), canvas_h - (top + orig_h)]

        image = _pad_image(image, padding, self.fill)
        target = _transform_target(
            target,
            canvas_size=(canvas_h, canvas_w),
            masks_fn=lambda masks: F.pad(masks, padding, fill=0),
            offset=(left, top),
        )
        return image, target


class RandomPhotometricDistort(nn.Module):
    """SSD colour distortion: brightness, contrast, saturation, hue, channel shuffle.

    Each step happens with probability ``p``; contrast comes either before or (with
    equal odds) after saturation and hue. Works on PIL images and tensors; targets are
    returned unchanged.
    """

    def __init__(
        self,
        contrast: Tuple[float, float] = (0.5, 1.5),
        saturation: Tuple[float, float] = (0.5, 1.5),
        hue: Tuple[float, float] = (-0.05, 0.05),
        brightness: Tuple[float, float] = (0.875, 1.125),
        p: float = 0.5,
    ):
        super().__init__()
        self._brightness = ColorJitter(brightness=brightness)
        self._contrast = ColorJitter(contrast=contrast)
        self._hue = ColorJitter(hue=hue)
        self._saturation = ColorJitter(saturation=saturation)
        self.p = p

    def _permute_channels(self, image):
        channels, _, _ = F.get_dimensions(image)
        permutation = torch.randperm(channels)
        if isinstance(image, Tensor):
            return image[..., permutation, :, :]
        return F.to_pil_image(F.pil_to_tensor(image)[permutation], mode=image.mode)

    def forward(self, image, target: Target = None):
        image = _check_image(image)
        original = image
        coins = torch.rand(7)
        contrast_first = coins[1] < 0.5

        if coins[0] < self.p:
            image = self._brightness(image)
        if contrast_first and coins[2] < self.p:
            image = self._contrast(image)
        if coins[3] < self.p:
            image = self._saturation(image)
        if coins[4] < self.p:
            image = self._hue(image)
        if not contrast_first and coins[5] < self.p:
            image = self._contrast(image)
        if coins[6] < self.p:
            image = self._permute_channels(image)

        if isinstance(image, Tensor):
            image = _rewrap(_plain(image), original)
        return image, target


# --------------------------------------------------------------------------- resizing and cropping


class ScaleJitter(nn.Module):
    """Large-scale jitter (Ghiasi et al., 2021, "Simple Copy-Paste ...").

    The image is resized, keeping its aspect ratio, so that it fits ``target_size =
    (height, width)`` times a factor drawn uniformly from ``scale_range``. Boxes and
    keypoints are scaled, masks resized with nearest-neighbour interpolation.
    """

    def __init__(
        self,
        target_size: Tuple[int, int],
        scale_range: Tuple[float, float] = (0.1, 2.0),
        interpolation: InterpolationMode = InterpolationMode.BILINEAR,
        antialias: Optional[bool] = True,
    ):
        super().__init__()
        self.target_size = target_size
        self.scale_range = scale_range
        self.interpolation = interpolation
        self.antialias = antialias

    def forward(self, image, target: Target = None):
        image = _check_image(image)
        _, orig_height, orig_width = F.get_dimensions(image)
        scale = self.scale_range[0] + torch.rand(1).item() * (self.scale_range[1] - self.scale_range[0])
        r = min(self.target_size[0] / orig_height, self.target_size[1] / orig_width) * scale
        size = (max(1, int(orig_height * r)), max(1, int(orig_width * r)))
        return _resize(image, target, size, self.interpolation, self.antialias)


class FixedSizeCrop(nn.Module):
    """Random crop to at most ``size = (height, width)``, then pad (bottom/right) to exactly ``size``.

    Objects whose boxes end up with no area inside the crop are dropped. ``fill`` and
    ``padding_mode`` apply to the image; masks are padded with zeros.
    """

    def __init__(self, size, fill=0, padding_mode: str = "constant"):
        super().__init__()
        if isinstance(size, numbers.Number):
            size = (int(size), int(size))
        elif len(size) == 1:
            size = (size[0], size[0])
        elif len(size) != 2:
            raise ValueError("Please provide only two dimensions (h, w) for size.")
        self.crop_height, self.crop_width = size
        self.fill = fill
        self.padding_mode = padding_mode

    def forward(self, image, target: Target = None):
        image = _check_image(image)
        _, height, width = F.get_dimensions(image)
        new_height = min(height, self.crop_height)
        new_width = min(width, self.crop_width)

        if (new_height, new_width) != (height, width):
            # Top and left are drawn independently (the reference shares one draw).
            r = torch.rand(2)
            top = int((height - new_height) * r[0])
            left = int((width - new_width) * r[1])
            cropped = F.crop(image, top, left, new_height, new_width)
            image = _rewrap(cropped, image) if isinstance(image, Tensor) else cropped
            target = _crop_target(target, top, left, new_height, new_width)
            if target is not None and "boxes" in target:
                boxes = _plain(target["boxes"])
                target = _select(target, (boxes[:, 0] < boxes[:, 2]) & (boxes[:, 1] < boxes[:, 3]))

        pad_bottom = self.crop_height - new_height
        pad_right = self.crop_width - new_width
        if pad_bottom or pad_right:
            padding = [0, 0, pad_right, pad_bottom]
            image = _pad_image(image, padding, self.fill, self.padding_mode)
            target = _transform_target(
                target,
                canvas_size=(self.crop_height, self.crop_width),
                masks_fn=lambda masks: F.pad(masks, padding, fill=0),
            )
        return image, target


class RandomShortestSize(nn.Module):
    """Resize so the short side is a random choice of ``min_size``, the long side at most ``max_size``."""

    def __init__(
        self,
        min_size: Union[List[int], Tuple[int], int],
        max_size: int,
        interpolation: InterpolationMode = InterpolationMode.BILINEAR,
    ):
        super().__init__()
        self.min_size = [min_size] if isinstance(min_size, int) else list(min_size)
        self.max_size = max_size
        self.interpolation = interpolation

    def forward(self, image, target: Target = None):
        image = _check_image(image)
        _, orig_height, orig_width = F.get_dimensions(image)
        min_size = self.min_size[int(torch.randint(len(self.min_size), (1,)))]
        r = min(min_size / min(orig_height, orig_width), self.max_size / max(orig_height, orig_width))
        size = (max(1, int(orig_height * r)), max(1, int(orig_width * r)))
        return _resize(image, target, size, self.interpolation)


# --------------------------------------------------------------------------- copy-paste


class SimpleCopyPaste(nn.Module):
    """Batch-level Simple Copy-Paste (Ghiasi et al., 2021).

    ``images, targets = t(images, targets)`` with lists of ``(C, H, W)`` tensors and
    target dicts that have ``masks``, ``boxes`` and ``labels``. Image ``i`` receives a
    random non-empty subset of the objects of image ``i - 1`` (image 0 receives from the
    last one), resized to its size if needed. Pasted pixels replace the destination's,
    with the paste mask softened by a 5x5 Gaussian (sigma 2) when ``blending`` is true.

    Afterwards, destination masks lose the pixels covered by pasted objects, the pasted
    objects are appended, and every box is recomputed from its mask with
    ``torchvision.ops.masks_to_boxes``. Objects whose box has no width or height (in
    particular those hidden entirely by the paste) are dropped. ``area`` (if present) is
    recomputed as the mask's pixel count; ``iscrowd`` follows its objects (pasted objects
    without one count as not crowd).
    """

    def __init__(self, blending: bool = True, resize_interpolation: InterpolationMode = InterpolationMode.BILINEAR):
        super().__init__()
        self.blending = blending
        self.resize_interpolation = resize_interpolation

    def forward(self, images: List[Tensor], targets: List[Dict[str, Tensor]]):
        if not isinstance(images, (list, tuple)) or not all(isinstance(im, Tensor) for im in images):
            raise TypeError("images should be a list of tensors.")
        if not isinstance(targets, (list, tuple)) or len(targets) != len(images):
            raise ValueError("targets should be a list of dicts, one per image.")
        for image, target in zip(images, targets):
            if image.ndim != 3:
                raise ValueError(f"images should be (C, H, W), got shape {tuple(image.shape)}.")
            for key in ("masks", "boxes", "labels"):
                if key not in target:
                    raise ValueError(f"SimpleCopyPaste needs '{key}' in every target.")
            if "keypoints" in target:
                raise ValueError("SimpleCopyPaste does not support keypoints.")
            _check_boxes(target)

        # Image i receives from image i - 1.
        sources = list(zip(images[-1:] + images[:-1], targets[-1:] + targets[:-1]))
        outputs = [self._paste(image, target, *source) for image, target, source in zip(images, targets, sources)]
        return [image for image, _ in outputs], [target for _, target in outputs]

    def _paste(self, image: Tensor, target: Dict[str, Tensor], paste_image: Tensor, paste_target: Dict[str, Tensor]):
        paste_masks = _plain(paste_target["masks"])
        num_objects = paste_masks.shape[0]
        if num_objects == 0:
            return image, dict(target)

        # A random non-empty subset: the distinct values among num_objects draws.
        chosen = torch.randint(num_objects, (num_objects,)).unique().to(paste_masks.device)
        paste_masks = paste_masks[chosen]
        source = _plain(paste_image)
        size = tuple(image.shape[-2:])
        if tuple(source.shape[-2:]) != size:
            source = F.resize(source, list(size), interpolation=self.resize_interpolation, antialias=True)
            paste_masks = _resize_masks(paste_masks, size)

        # Composite the images.
        covered = (paste_masks != 0).any(dim=0)  # (H, W) bool: pixels of the pasted objects
        alpha = covered.to(torch.float32)
        if self.blending:
            alpha = F.gaussian_blur(alpha[None], kernel_size=[5, 5], sigma=[2.0, 2.0])[0]
        dest = _plain(image)
        blended = dest.to(torch.float32) * (1 - alpha) + source.to(torch.float32) * alpha
        if not dest.is_floating_point():
            blended = blended.round()
        out_image = _rewrap(blended.to(dest.dtype), image)

        # Destination objects lose what the pasted ones cover; pasted objects go on top.
        dest_masks = _plain(target["masks"]).masked_fill(covered, 0)
        masks = torch.cat([dest_masks, paste_masks.to(dest_masks.dtype)])
        out = dict(target)
        out["masks"] = _rewrap(masks, target["masks"])
        boxes = torchvision.ops.masks_to_boxes(masks).to(target["boxes"].dtype)
        out["boxes"] = _rewrap(boxes, target["boxes"], canvas_size=size)
        out["labels"] = torch.cat([_plain(target["labels"]), _plain(paste_target["labels"])[chosen]])
        if "iscrowd" in target:
            dest_crowd = _plain(target["iscrowd"])
            if "iscrowd" in paste_target:
                paste_crowd = _plain(paste_target["iscrowd"])[chosen].to(dest_crowd.dtype)
            else:
                paste_crowd = dest_crowd.new_zeros(len(chosen))
            out["iscrowd"] = torch.cat([dest_crowd, paste_crowd])
        if "area" in target:
            out["area"] = masks.flatten(1).sum(dim=1).to(target["area"].dtype)

        # An empty mask gives an all-zero box, so this also drops fully covered objects.
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return out_image, _select(out, valid)

    def extra_repr(self) -> str:
        return f"blending={self.blending}, resize_interpolation={self.resize_interpolation}"
