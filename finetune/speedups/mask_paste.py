"""Mask R-CNN's masks pasted into the image faster and in less memory: ``paste_masks_in_image``
(one preallocated output), ``masks_to_rles`` (each mask pasted only inside its box, encoded as a
COCO RLE), the ``FastMaskPasteTransform`` that ``finetune.speedups.fast_layers.speed_up_model``
installs, and ``compact_masks``, which makes a model give its masks as RLE.

Private torchvision APIs used here: ``torchvision.models.detection.roi_heads.expand_boxes`` and
``transform.resize_boxes``/``resize_keypoints`` (undocumented module functions), and
``GeneralizedRCNNTransform.postprocess`` overridden. Checked against torchvision 0.29.1
(torch 2.14.1) and 0.26.0 (torch 2.11.0).
"""

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import expand_boxes
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes, resize_keypoints

from finetune.data.masks import mask_to_rle


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

    im_h, im_w = int(img_shape[0]), int(img_shape[1])
    keep = [True] * masks.shape[0] if keep is None else [bool(k) for k in keep]
    buffer = np.zeros((im_h, im_w), dtype=np.uint8, order="F")  # uint8, Fortran order: encoded without a copy
    empty = mask_to_rle(buffer)
    rles = [dict(empty) if k else None for k in keep]
    index = [i for i, k in enumerate(keep) if k]
    chosen = torch.tensor(index, dtype=torch.long, device=masks.device)
    for j, (ya, yb, xa, xb), patch in _pasted_patches(masks[chosen], boxes[chosen], img_shape, padding):
        region = buffer[ya:yb, xa:xb]
        region[...] = (patch > threshold).cpu().numpy()
        rles[index[j]] = mask_to_rle(buffer)
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
