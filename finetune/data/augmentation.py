"""The training augmentations of torchvision's detection reference: train.py's
``--data-augmentation`` presets and ``--use-copypaste``, built on ``torchvision.transforms.v2``
so boxes, masks and labels follow every transform.

``get_transform(train, preset, min_size, max_size)`` is the tutorial's ``get_transform`` with a
preset; ``train_collate`` gives the training loader's collate function (Simple Copy-Paste,
``transforms.SimpleCopyPaste``, for ``--use-copypaste``); ``check_copy_paste`` refuses data
without masks; ``train_at_preset_size`` makes the model train on the sizes the preset chose.

The presets (train.py's, ``references/detection/presets.py``):

* ``hflip``: a horizontal flip, half of the time (the tutorial's; the default);
* ``lsj``: large-scale jitter: the image scaled to fit a square canvas times 0.1-2.0, a random
  canvas-sized crop, padded with the mean colour, then the flip;
* ``multiscale``: the shorter side resized to a random one of 11 sizes, then the flip;
* ``ssd``: colour distortion, a zoom out onto a canvas up to 4x as large, an IoU-constrained
  crop (SSD's), then the flip;
* ``ssdlite``: the IoU-constrained crop and the flip.

Sizes follow the run's ``--min-size``/``--max-size``: at the tutorial's 800/1333 they are
train.py's exactly (lsj's canvas 1024x1024, multiscale's sides 480-800); at other sizes they
scale with ``--min-size`` (``lsj_side``, ``multiscale_sides``), so a 128 px demo run does not
train on 1024 px canvases. As in train.py, lsj and multiscale images reach the model at the
size the preset gave them (its own resize to ``--min-size`` is skipped in training, not in
evaluation). After the geometric steps, boxes are clamped to the image and objects whose box
is under 1 px (``SanitizeBoundingBoxes``) or whose mask has no pixel left are dropped, with
their labels, areas and crowd flags; ``area`` is the box's area again, as the readers give it.
"""

import types

import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

import transforms as reference_transforms
import utils
from finetune.errors import DatasetError

PRESETS = ("hflip", "lsj", "multiscale", "ssd", "ssdlite")


# train.py's padding colour (the ImageNet mean in 0-255: the images are still uint8 here); masks pad with 0
MEAN = (123.0, 117.0, 104.0)


# train.py's sizes, meant for the model's default --min-size 800: lsj's square canvas and scale
# range, multiscale's shorter sides (480 to 800 in steps of 32)
REFERENCE_MIN_SIZE = 800


LSJ_CANVAS = 1024


LSJ_SCALE_RANGE = (0.1, 2.0)


MULTISCALE_SIDES = tuple(range(480, 801, 32))


# presets whose images go to the model at the size they chose (train.py skips the model's resize for them)
SIZED_PRESETS = ("lsj", "multiscale")


# the per-object entries of a target, filtered together when objects are dropped
PER_OBJECT = ("boxes", "masks", "labels", "area", "iscrowd")


def lsj_side(min_size, max_size):
    """lsj's square canvas: train.py's 1024 at ``min_size`` 800, scaled with ``min_size`` otherwise
    (to a multiple of 32, which the model pads its batches to anyway), at most ``max_size``."""
    side = max(32, round(min_size * LSJ_CANVAS / REFERENCE_MIN_SIZE / 32) * 32)
    return min(side, max_size)


def multiscale_sides(min_size):
    """multiscale's shorter sides: train.py's 480-800 at ``min_size`` 800, scaled with it otherwise."""
    return tuple(sorted({max(1, round(s * min_size / REFERENCE_MIN_SIZE)) for s in MULTISCALE_SIDES}))


class FixedSizeCrop(T.Transform):
    """A random crop of at most ``size`` (height, width), padded at the right and bottom to exactly
    ``size``: the image with ``fill``, masks with 0 (the reference's FixedSizeCrop, on v2 tv_tensors)."""

    def __init__(self, size, fill=MEAN):
        super().__init__()
        self.size, self.fill = tuple(size), fill

    def make_params(self, flat_inputs):
        height, width = T.query_size(flat_inputs)
        crop_h, crop_w = min(height, self.size[0]), min(width, self.size[1])
        top = int(torch.randint(height - crop_h + 1, ()))
        left = int(torch.randint(width - crop_w + 1, ()))
        return dict(top=top, left=left, height=crop_h, width=crop_w,
                    padding=[0, 0, self.size[1] - crop_w, self.size[0] - crop_h])

    def transform(self, inpt, params):
        inpt = F.crop(inpt, params["top"], params["left"], params["height"], params["width"])
        if any(params["padding"]):
            fill = 0 if isinstance(inpt, tv_tensors.Mask) else list(self.fill)
            inpt = F.pad(inpt, params["padding"], fill=fill)
        return inpt


def preset_steps(preset, min_size=REFERENCE_MIN_SIZE, max_size=1333):
    """The preset's random steps (before the conversion to float), as a list of v2 transforms."""
    flip = T.RandomHorizontalFlip(0.5)
    if preset == "hflip":
        return [flip]
    if preset == "lsj":
        side = lsj_side(min_size, max_size)
        return [T.ScaleJitter(target_size=(side, side), scale_range=LSJ_SCALE_RANGE, antialias=True),
                FixedSizeCrop((side, side), fill=MEAN), flip]
    if preset == "multiscale":
        return [T.RandomShortestSize(min_size=list(multiscale_sides(min_size)), max_size=max_size, antialias=True),
                flip]
    if preset == "ssd":
        return [T.RandomPhotometricDistort(), T.RandomZoomOut(fill={tv_tensors.Mask: 0, "others": MEAN}),
                T.RandomIoUCrop(), flip]
    if preset == "ssdlite":
        return [T.RandomIoUCrop(), flip]
    raise ValueError(f"unknown --data-augmentation {preset!r}; expected one of {', '.join(PRESETS)}")


def get_transform(train, preset="hflip", min_size=REFERENCE_MIN_SIZE, max_size=1333):
    """The transform of a dataset: ``preset``'s augmentation when ``train``, then float images and
    plain tensors. ``hflip`` (and every preset's test transform) is the tutorial's get_transform
    exactly, the same random draws included; the other presets clean the targets after their
    geometric steps (the module's docstring)."""
    steps = preset_steps(preset, min_size, max_size) if train else []
    steps.append(T.ToDtype(torch.float, scale=True))
    if train and preset != "hflip":  # a flip leaves every box and mask as large as it was
        steps += [T.ClampBoundingBoxes(), T.SanitizeBoundingBoxes(labels_getter=per_object_values)]
    steps.append(T.ToPureTensor())
    if train and preset != "hflip":
        steps.append(drop_empty_masks)
    return T.Compose(steps)


def per_object_values(inputs):
    """What ``SanitizeBoundingBoxes`` filters with the boxes (and masks, which it finds itself):
    the target's labels, areas and crowd flags."""
    target = inputs[1]
    return tuple(target[key] for key in ("labels", "area", "iscrowd") if key in target)


def drop_empty_masks(image, target):
    """Objects whose mask lost every pixel (a thin part scaled or cropped away while its box kept
    1 px) are dropped; ``area`` becomes the box's area again, as the readers compute it."""
    out = dict(target)
    if "masks" in target and len(target["masks"]):
        keep = target["masks"].flatten(1).any(dim=1)
        if not keep.all():
            out.update({key: target[key][keep] for key in PER_OBJECT if key in target})
    if "area" in out:
        boxes = out["boxes"]
        out["area"] = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).to(out["area"].dtype)
    return image, out


# train.py's: pasted objects blended in with a Gaussian-softened mask, bilinear when resized
COPY_PASTE = reference_transforms.SimpleCopyPaste(blending=True, resize_interpolation=InterpolationMode.BILINEAR)


def copy_paste_collate(batch):
    """The training batch, each image given objects of the one before it (Simple Copy-Paste), as
    train.py's --use-copypaste does in its collate function."""
    images, targets = utils.collate_fn(batch)
    return COPY_PASTE(list(images), list(targets))


def train_collate(use_copypaste):
    """The training loader's collate function: Simple Copy-Paste with ``use_copypaste``, else the tutorial's."""
    return copy_paste_collate if use_copypaste else utils.collate_fn


def check_copy_paste(data_path, use_copypaste, has_masks):
    """Copy-paste cuts objects out by their masks: box-only data has none to cut."""
    if use_copypaste and not has_masks:
        raise DatasetError(f"{data_path}: --use-copypaste pastes objects by their masks, and no annotation here has a "
                           f"segmentation; drop --use-copypaste, or annotate polygons.")


def _resize_outside_training(transform, image, target=None):
    """``GeneralizedRCNNTransform.resize``, except in training: the image keeps its size."""
    if transform.training:
        return image, target
    return type(transform).resize(transform, image, target)


def train_at_preset_size(model, preset):
    """lsj and multiscale choose the training size themselves: the model (a torchvision detector)
    then skips its own resize to ``--min-size`` in training, as train.py builds it (there by the
    transform's private ``_skip_resize``; here its public ``resize`` step, replaced on this model
    only); evaluation and prediction still resize. Returns ``model``."""
    if preset in SIZED_PRESETS:
        model.transform.resize = types.MethodType(_resize_outside_training, model.transform)
    else:
        model.transform.__dict__.pop("resize", None)
    return model
