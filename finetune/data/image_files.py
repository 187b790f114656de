"""Image files as every reader opens them: ``open_png`` and ``read_rgb`` decode one (any mode turned
into RGB by ``to_rgb``, 16-bit grayscale scaled to 8 bits), ``image_size`` reads its upright size
from the header, and ``IMAGE_EXTENSIONS`` are the formats the labelme and YOLO readers take.
"""

import numpy as np
from PIL import Image
from torchvision.transforms.v2 import functional as F

from finetune.errors import DatasetError


# torchvision 0.29 deprecates its image decoders (read_image) in favour of TorchCodec; PIL
# decodes the same PNGs, converts any image mode to RGB, and keeps palette masks as indices.
def open_png(path, what):
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except (OSError, SyntaxError, ValueError) as e:  # truncated, not an image, bad header
        other = "mask" if what == "image" else "image"
        raise DatasetError(f"{path}: cannot decode {what} ({str(e).splitlines()[0][:120]}). "
                           f"Replace it with a valid PNG or remove it and its {other}.") from None


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
    im = open_png(path, "image")
    try:
        return F.pil_to_tensor(to_rgb(im))
    except ValueError as e:
        raise DatasetError(f"{path}: cannot use this image ({e}).") from None


# What PIL reads of the image formats Ultralytics accepts (its IMG_FORMATS less dng/pfm/heic).
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp")


def image_size(path, what):
    """``(width, height)`` of the image upright (its EXIF orientation applied), from its header."""
    try:
        with Image.open(path) as pil:
            (w, h), orientation = pil.size, pil.getexif().get(0x0112, 1)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"{path}: cannot read this image ({str(e).splitlines()[0][:100]}). Replace it or remove "
                           f"it from {what}.") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)
