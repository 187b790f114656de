"""The Penn-Fudan reader: its folder layout read, checked and downloaded.

Layout: ``PNGImages/X.png`` with ``PedMasks/X_mask.png``, where pixel value k marks the k-th
pedestrian (0 is background). ``PennFudanDataset`` (tv_training.py) reads one pair with
``pair_images_and_masks``/``read_rgb``/``read_instance_mask``/``instance_masks_and_boxes``, so
copying that class takes this file and errors.py with it; ``check_dataset`` decodes every pair
once before training, so a broken file is named before any time is spent.
"""

import numpy as np
from PIL import Image
from torchvision.transforms.v2 import functional as F

from finetune.errors import DatasetError


# torchvision 0.29 deprecates its image decoders (read_image) in favour of TorchCodec; PIL
# decodes the same PNGs, converts any image mode to RGB, and keeps palette masks as indices.
def _open_png(path, what):
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except (OSError, SyntaxError, ValueError) as e:  # truncated, not an image, bad header
        raise DatasetError(f"{path}: cannot decode {what} ({str(e).splitlines()[0][:120]}). "
                           f"Replace it with a valid PNG or remove it and its {'mask' if what == 'image' else 'image'}.") from None


def to_rgb(im):
    """A PIL image in RGB. 16-bit (and 32-bit integer) grayscale is scaled to 8 bits over its
    full range first: PIL's own conversion clips every value above 255, giving a white image."""
    if im.mode.startswith("I"):  # I;16, I;16B, I (what PIL makes of 16-bit grayscale PNGs and TIFFs)
        pixels = np.clip(np.asarray(im), 0, 65535).astype(np.uint32) >> 8
        im = Image.fromarray(pixels.astype(np.uint8), "L")
    elif im.mode == "F":
        raise ValueError("32-bit floating-point pixels, which have no fixed range; save it with 8 or 16 bits")
    return im.convert("RGB")


def read_rgb(path):
    """Decode an image as a (3, H, W) uint8 tensor (RGBA, grayscale, 16-bit and palette PNGs are converted)."""
    im = _open_png(path, "image")
    try:
        return F.pil_to_tensor(to_rgb(im))
    except ValueError as e:
        raise DatasetError(f"{path}: cannot use this image ({e}).") from None


# What PIL reads of the image formats Ultralytics accepts (its IMG_FORMATS less dng/pfm/heic).
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp")


def _image_size(path, what):
    """``(width, height)`` of the image upright (its EXIF orientation applied), from its header."""
    try:
        with Image.open(path) as pil:
            (w, h), orientation = pil.size, pil.getexif().get(0x0112, 1)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"{path}: cannot read this image ({str(e).splitlines()[0][:100]}). Replace it or remove "
                           f"it from {what}.") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)
