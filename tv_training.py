"""TorchVision Object Detection Finetuning Tutorial, as one runnable script.

Fine-tunes a COCO-pretrained Mask R-CNN on the Penn-Fudan pedestrians (170 images) and
scores it with COCO bbox/segm mAP, using the reference helpers in this folder
(engine.py, utils.py, coco_utils.py, coco_eval.py, transforms.py).

    python tv_training.py                            # the tutorial (downloads data + weights)
    python tv_training.py --demo                     # offline: synthetic pedestrians, random init
    python tv_training.py --check-forward            # the tutorial's "testing forward()" check
    python tv_training.py --model fasterrcnn         # tutorial section 1: box-only fine-tuning
    python tv_training.py --resume output/checkpoint.pth              # continue training
    python tv_training.py --test-only --weights output/checkpoint.pth # evaluate only
    python tv_training.py --predict img.png --weights output/checkpoint.pth
    torchrun --nproc_per_node=2 tv_training.py       # several processes (gloo on CPU, NCCL on GPU)
"""

import argparse
import json
import os
import shlex
import sys
import time
import zipfile

# Must precede `import torch`: the OpenMP runtime reads it once, when torch loads it. Idle
# threads then sleep instead of spinning, which on a CPU shared with other processes made
# a training step ~1.3x and inference ~2x faster (README.md, "Speed"); an explicit
# OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision import tv_tensors
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.ops.boxes import masks_to_boxes
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

import utils
from coco_utils import get_coco_api_from_dataset
from engine import NonFiniteLossError, evaluate, speed_up_model, train_one_epoch, use_channels_last

DATA_URL = "https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip"
COCO_STAT_NAMES = [
    "AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
    "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large",
]


class TutorialError(Exception):
    """A problem the user can fix; the command line prints its one-line message and exits 1."""


class DatasetError(TutorialError):
    """The data on disk is missing or malformed; the message names the file and the fix."""


# ---------------------------------------------------------------------------------------
# 1. The dataset: PNGImages/X.png with PedMasks/X_mask.png (pixel value k = k-th pedestrian)
# ---------------------------------------------------------------------------------------

def pair_images_and_masks(root):
    """Return sorted ``[(image_path, mask_path)]``, pairing ``X.png`` with ``X_mask.png``.

    The tutorial sorts both folders and zips them, so one missing mask silently gives
    every later image the wrong mask; here the pairing is by name and any mismatch is an error.
    """
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: data folder not found. Run without --data-path to download "
                           f"Penn-Fudan into data/PennFudanPed, or use --demo for synthetic data.")
    img_dir, mask_dir = os.path.join(root, "PNGImages"), os.path.join(root, "PedMasks")
    for folder in (img_dir, mask_dir):
        if not os.path.isdir(folder):
            raise DatasetError(f"{folder}: folder missing. A Penn-Fudan-style dataset has PNGImages/ "
                               f"(X.png) and PedMasks/ (X_mask.png) side by side.")
    images = sorted(f for f in os.listdir(img_dir) if f.lower().endswith(".png"))
    masks = sorted(f for f in os.listdir(mask_dir) if f.lower().endswith(".png"))
    if not images:
        raise DatasetError(f"{img_dir}: no .png images. Put the dataset's images there (X.png).")
    mask_set = set(masks)
    for name in images:
        expected = name[:-4] + "_mask.png"
        if expected not in mask_set:
            raise DatasetError(f"{os.path.join(img_dir, name)}: no mask {os.path.join(mask_dir, expected)}. "
                               f"Add the mask or remove the image.")
    image_stems = {name[:-4] for name in images}
    for name in masks:
        if not name.endswith("_mask.png") or name[: -len("_mask.png")] not in image_stems:
            raise DatasetError(f"{os.path.join(mask_dir, name)}: no image of the same name in {img_dir} "
                               f"(masks are named X_mask.png for image X.png). Rename or remove it.")
    return [(os.path.join(img_dir, n), os.path.join(mask_dir, n[:-4] + "_mask.png")) for n in images]


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


def read_rgb(path):
    """Decode an image as a (3, H, W) uint8 tensor (RGBA, grayscale and palette PNGs are converted)."""
    return F.pil_to_tensor(_open_png(path, "image").convert("RGB"))


def read_instance_mask(path, image_size=None):
    """Decode an instance mask (grayscale or palette: values are instance ids) as an (H, W) tensor."""
    im = _open_png(path, "mask")
    if im.mode not in ("L", "P", "I", "I;16"):
        raise DatasetError(f"{path}: mask has {len(im.getbands())} channels ({im.mode}); expected one channel "
                           f"(grayscale or palette) whose pixel value k marks the k-th instance.")
    mask = torch.from_numpy(np.asarray(im).astype(np.int64 if im.mode.startswith("I") else np.uint8))
    if image_size is not None and tuple(mask.shape) != tuple(image_size):
        raise DatasetError(f"{path}: mask is {mask.shape[-1]}x{mask.shape[-2]} but its image is "
                           f"{image_size[1]}x{image_size[0]}; masks must have their image's size.")
    return mask


def instance_masks_and_boxes(mask):
    """Split an id mask into (N, H, W) binary masks and (N, 4) boxes; fix degenerate boxes.

    Instance ids are the distinct non-zero values, contiguous or not. ``masks_to_boxes``
    gives a zero-width (or zero-height) box for an instance one pixel wide (or tall), which
    Mask R-CNN rejects ("All bounding boxes should have positive height and width"): such a
    box is widened to 1 px so the instance still trains. Returns also the number widened.
    """
    obj_ids = torch.unique(mask)
    obj_ids = obj_ids[obj_ids != 0]
    masks = (mask == obj_ids[:, None, None]).to(dtype=torch.uint8)
    boxes = masks_to_boxes(masks)
    degenerate = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    boxes[:, 2] = torch.maximum(boxes[:, 2], boxes[:, 0] + 1)
    boxes[:, 3] = torch.maximum(boxes[:, 3], boxes[:, 1] + 1)
    return masks, boxes, int(degenerate.sum())


def check_dataset(root):
    """Decode every image and mask once, before training: fail early with the file to fix.

    Returns a summary dict (images, instances, negatives, widened boxes).
    """
    pairs = pair_images_and_masks(root)
    summary = dict(images=len(pairs), instances=0, negative_images=0, widened_boxes=0)
    for img_path, mask_path in pairs:
        img = read_rgb(img_path)
        mask = read_instance_mask(mask_path, img.shape[-2:])
        _, _, widened = instance_masks_and_boxes(mask)
        n = int((torch.unique(mask) != 0).sum())
        summary["instances"] += n
        summary["negative_images"] += n == 0
        if widened:
            summary["widened_boxes"] += widened
            print(f"warning: {mask_path}: {widened} instance(s) one pixel wide or tall; "
                  f"their boxes are widened to 1 px so training does not crash")
    return summary


class PennFudanDataset(torch.utils.data.Dataset):
    """The tutorial's dataset: returns ``(image, target)`` with tv_tensors for the v2 transforms."""

    def __init__(self, root, transforms):
        self.root = root
        self.transforms = transforms
        self.pairs = pair_images_and_masks(root)
        self.imgs = [os.path.basename(p) for p, _ in self.pairs]
        self.masks = [os.path.basename(m) for _, m in self.pairs]
        self._sizes = {}

    def __getitem__(self, idx):
        img_path, mask_path = self.pairs[idx]
        img = read_rgb(img_path)
        mask = read_instance_mask(mask_path, img.shape[-2:])
        masks, boxes, _ = instance_masks_and_boxes(mask)
        num_objs = len(masks)

        # there is only one class: pedestrian
        labels = torch.ones((num_objs,), dtype=torch.int64)
        area = (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 2] - boxes[:, 0])
        # suppose all instances are not crowd
        iscrowd = torch.zeros((num_objs,), dtype=torch.int64)

        img = tv_tensors.Image(img)
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=F.get_size(img)),
            "masks": tv_tensors.Mask(masks),
            "labels": labels,
            "image_id": idx,
            "area": area,
            "iscrowd": iscrowd,
        }
        if self.transforms is not None:
            img, target = self.transforms(img, target)
        return img, target

    def get_height_and_width(self, idx):
        """Image size from the PNG header, without decoding (used to group batches by aspect ratio)."""
        if idx not in self._sizes:
            with Image.open(self.pairs[idx][0]) as im:
                self._sizes[idx] = (im.height, im.width)
        return self._sizes[idx]

    def __len__(self):
        return len(self.pairs)


def download_pennfudan(root):
    """Download PennFudanPed.zip next to ``root`` (a folder named PennFudanPed) and extract it, with a progress bar.

    The publisher gives no checksum and the archive has changed over time (78 pedestrians
    were added), so one pinned MD5 would reject valid copies. Instead every member's CRC-32
    is verified and the expected layout is checked before anything is extracted.
    """
    from torchvision.datasets.utils import download_url

    parent = os.path.dirname(os.path.abspath(root)) or "."
    os.makedirs(parent, exist_ok=True)
    zip_path = os.path.join(parent, "PennFudanPed.zip")
    if not os.path.exists(zip_path):
        try:
            download_url(DATA_URL, parent, filename="PennFudanPed.zip")
        except (OSError, RuntimeError) as e:  # URLError is an OSError
            if os.path.exists(zip_path):
                os.remove(zip_path)
            raise DatasetError(
                f"{root} is missing and {DATA_URL} could not be downloaded ({e}). Download the zip by hand, "
                f"put it at {zip_path} (or unzip it so that {root}/PNGImages exists), and run again; "
                f"`python tv_training.py --demo` runs fully offline on synthetic data."
            ) from None
    try:
        with zipfile.ZipFile(zip_path) as zf:
            bad = zf.testzip()
            names = zf.namelist()
            n_png = sum(n.startswith("PennFudanPed/PNGImages/") and n.endswith(".png") for n in names)
            n_mask = sum(n.startswith("PennFudanPed/PedMasks/") and n.endswith("_mask.png") for n in names)
            if bad is not None or n_png == 0 or n_png != n_mask:
                raise zipfile.BadZipFile(f"member {bad} fails its CRC" if bad else
                                         f"{n_png} images and {n_mask} masks under PennFudanPed/")
            zf.extractall(parent)  # the archive holds PennFudanPed/..., i.e. root
    except zipfile.BadZipFile as e:
        raise DatasetError(f"{zip_path}: corrupt or unexpected archive ({e}). Delete it and run again "
                           f"to download a fresh copy.") from None
    print(f"Penn-Fudan: {n_png} images extracted to {root}")


# ---------------------------------------------------------------------------------------
# 2. The models: Mask R-CNN (the tutorial's), and the two recipes of its earlier sections
# ---------------------------------------------------------------------------------------

def _pretrained_layout(model, trainable_layers=3):
    """Give a randomly built ResNet-FPN model the layout of the pretrained one, without downloading.

    Pretrained builders use FrozenBatchNorm2d and train only the last 3 ResNet stages; random
    init (``weights_backbone=None``) uses trainable BatchNorm and trains all 5. A checkpoint
    fine-tuned from the pretrained weights must be loaded back into the same layout.
    """
    body = model.backbone.body

    def freeze_bn(module):
        for name, child in module.named_children():
            if isinstance(child, torch.nn.BatchNorm2d):
                setattr(module, name, torchvision.ops.FrozenBatchNorm2d(child.num_features, eps=child.eps))
            else:
                freeze_bn(child)

    freeze_bn(body)
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    for name, p in body.named_parameters():
        p.requires_grad_(any(name.startswith(layer) for layer in trainable))
    return model


def _build_detector(builder, weights, **kwargs):
    """Call a torchvision builder with ``weights`` = "DEFAULT" (COCO), "layout" or None (random).

    "layout" builds the pretrained configuration with random values, to load a checkpoint
    into. A download that fails raises a ``TutorialError`` naming the file to fetch.
    """
    if weights is None:
        return builder(weights=None, weights_backbone=None, **kwargs)
    if weights == "layout":
        return _pretrained_layout(builder(weights=None, weights_backbone=None, **kwargs))
    try:
        return builder(weights=weights, **kwargs)
    except (OSError, RuntimeError) as e:  # no network (URLError), or a download/cache failing its hash
        enum = torchvision.models.get_model_weights(builder)
        url = enum[weights].url if weights in enum.__members__ else enum.DEFAULT.url
        cache = os.path.join(torch.hub.get_dir(), "checkpoints")
        raise TutorialError(
            f"cannot get pretrained weights {url} ({str(e).splitlines()[0][:160]}). Download "
            f"{os.path.basename(url)} by hand into {cache}/ (delete a corrupt copy there first), "
            f"or train from random init with --weights none (or run --demo)."
        ) from None


def _imagenet_classifier(builder, weights):
    """An ImageNet classifier to take a backbone from: downloaded weights for "DEFAULT", else random."""
    try:
        return builder(weights="DEFAULT" if weights == "DEFAULT" else None)
    except OSError as e:
        url = torchvision.models.get_model_weights(builder).DEFAULT.url
        raise TutorialError(
            f"cannot download backbone weights {url} ({e}). Download {os.path.basename(url)} into "
            f"{os.path.join(torch.hub.get_dir(), 'checkpoints')}/, or use --weights none."
        ) from None


def get_model_instance_segmentation(num_classes, weights="DEFAULT", **kwargs):
    """The tutorial's model: COCO Mask R-CNN with new box and mask predictors for ``num_classes``.

    ``weights``: "DEFAULT" (COCO-pretrained, downloaded), None (random init, trains from
    scratch) or "layout" (pretrained layout, random values: for loading a checkpoint).
    ``kwargs`` go to ``MaskRCNN`` (e.g. ``min_size``, ``max_size``, ``box_detections_per_img``).
    """
    # load an instance segmentation model pre-trained on COCO
    model = _build_detector(torchvision.models.detection.maskrcnn_resnet50_fpn, weights, **kwargs)
    # get number of input features for the classifier and replace the box predictor
    in_features = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes)
    # the same for the mask predictor
    in_features_mask = model.roi_heads.mask_predictor.conv5_mask.in_channels
    hidden_layer = 256
    model.roi_heads.mask_predictor = MaskRCNNPredictor(in_features_mask, hidden_layer, num_classes)
    # same results, less time: mask pasting, BatchNorm folding, RoI pooling (engine.speed_up_model)
    return speed_up_model(model)


def get_model_object_detection(num_classes, weights="DEFAULT", **kwargs):
    """Tutorial section 1: fine-tune a COCO Faster R-CNN, replacing only the box predictor."""
    model = _build_detector(torchvision.models.detection.fasterrcnn_resnet50_fpn, weights, **kwargs)
    in_features = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes)
    return speed_up_model(model)


def get_model_mobilenet(num_classes, weights="DEFAULT", **kwargs):
    """Tutorial section 2: Faster R-CNN on an ImageNet MobileNetV2 backbone (one feature map)."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.rpn import AnchorGenerator

    backbone = _imagenet_classifier(torchvision.models.mobilenet_v2, weights).features
    # FasterRCNN needs to know the number of output channels of the backbone
    backbone.out_channels = 1280
    # 5 sizes x 3 aspect ratios per location, on the single feature map
    anchor_generator = AnchorGenerator(sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),))
    roi_pooler = torchvision.ops.MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2)
    return FasterRCNN(backbone, num_classes=num_classes, rpn_anchor_generator=anchor_generator,
                      box_roi_pool=roi_pooler, **kwargs)


def get_model_maskrcnn_resnet18(num_classes, weights=None, **kwargs):
    """Not in the tutorial: a Mask R-CNN small enough to train from scratch on a CPU (the demo).

    ResNet-18 + FPN with 128 channels (instead of ResNet-50 + FPN with 256), a 256-wide box
    head (instead of 1024) and 2 mask-head convolutions (instead of 4): 14M parameters against
    44M. ``weights``: None or "layout" (random init) or "DEFAULT" (ImageNet ResNet-18 backbone,
    downloaded). BatchNorm stays trainable. ``kwargs`` go to ``MaskRCNN``.
    """
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads
    from torchvision.models.detection.rpn import RPNHead
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    body = _imagenet_classifier(torchvision.models.resnet18, weights)
    channels = 128
    layers = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}  # strides 4-32, + max-pooled 64
    backbone = BackboneWithFPN(body, layers, [64, 128, 256, 512], channels, extra_blocks=LastLevelMaxPool())
    # MaskRCNN's default anchors, unless given; the RPN head predicts one score per anchor shape
    anchors = kwargs.pop("rpn_anchor_generator", None) or \
        AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)
    heads = dict(
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(channels, anchors.num_anchors_per_location()[0]),
        box_head=TwoMLPHead(channels * 7 * 7, 256),
        box_predictor=FastRCNNPredictor(256, num_classes),
        mask_head=MaskRCNNHeads(channels, [channels, channels], 1),
        mask_predictor=MaskRCNNPredictor(channels, channels, num_classes),
    )
    heads.update(kwargs)
    return speed_up_model(MaskRCNN(backbone, num_classes=None, **heads))


MODELS = {
    "maskrcnn": get_model_instance_segmentation,
    "fasterrcnn": get_model_object_detection,
    "mobilenet": get_model_mobilenet,
    "maskrcnn_resnet18": get_model_maskrcnn_resnet18,
}


# ---------------------------------------------------------------------------------------
# 3. Transforms: the tutorial's (torchvision.transforms.v2 understands tv_tensors)
# ---------------------------------------------------------------------------------------

def get_transform(train):
    transforms = []
    if train:
        transforms.append(T.RandomHorizontalFlip(0.5))
    transforms.append(T.ToDtype(torch.float, scale=True))
    transforms.append(T.ToPureTensor())
    return T.Compose(transforms)


# ---------------------------------------------------------------------------------------
# 4. Command line: torchvision train.py's flag names, the tutorial's values as defaults
# ---------------------------------------------------------------------------------------

class _ArgumentParser(argparse.ArgumentParser):
    """Records which options were typed (``args.explicit``), so --demo changes only the others."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        saved = {a: a.default for a in self._actions}
        try:  # parse once more with every default suppressed: only typed options remain
            for action in self._actions:
                action.default = argparse.SUPPRESS
            typed, _ = super().parse_known_args(args, None)
        finally:
            for action, default in saved.items():
                action.default = default
        namespace.explicit = sorted(vars(typed))
        return namespace, extras


def get_args_parser(add_help=True):
    p = _ArgumentParser(description="TorchVision Object Detection Finetuning Tutorial",
                                add_help=add_help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-path", default="data/PennFudanPed",
                   help="dataset root with PNGImages/ and PedMasks/; downloaded when missing")
    p.add_argument("--model", default="maskrcnn", choices=sorted(MODELS),
                   help="maskrcnn (the tutorial), fasterrcnn (section 1), mobilenet (section 2), "
                        "maskrcnn_resnet18 (small Mask R-CNN for training from scratch; --demo's)")
    p.add_argument("--weights", default="DEFAULT",
                   help="DEFAULT (pretrained, downloaded: COCO; an ImageNet backbone for mobilenet and "
                        "maskrcnn_resnet18), none (random init) or a checkpoint file")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when available, else cpu)")
    p.add_argument("-b", "--batch-size", default=2, type=int, help="images per batch (per process)")
    p.add_argument("--epochs", default=2, type=int, help="number of epochs")
    p.add_argument("-j", "--workers", default=4, type=int,
                   help="data-loading workers (capped at the number of CPU cores)")
    p.add_argument("--opt", default="sgd", choices=["sgd", "adamw"], help="optimizer")
    p.add_argument("--lr", default=0.005, type=float, help="learning rate")
    p.add_argument("--momentum", default=0.9, type=float, help="SGD momentum")
    p.add_argument("--wd", "--weight-decay", default=0.0005, type=float, dest="weight_decay",
                   help="weight decay")
    p.add_argument("--lr-scheduler", default="steplr", choices=["steplr", "cosineannealinglr"],
                   help="steplr (the tutorial) or cosineannealinglr (over --epochs)")
    p.add_argument("--clip-grad-norm", default=None, type=float,
                   help="clip the gradients' total norm to this value (None: no clipping, as in the tutorial)")
    p.add_argument("--lr-step-size", default=3, type=int, help="StepLR: epochs between lr drops")
    p.add_argument("--lr-gamma", default=0.1, type=float, help="StepLR: lr multiplier at each drop")
    p.add_argument("--print-freq", default=10, type=int, help="print a log line every N iterations")
    p.add_argument("--output-dir", default="output",
                   help="checkpoint, metrics.json, curves.png and figures go here ('' to write nothing)")
    p.add_argument("--resume", default=None, help="checkpoint to continue training from; None starts afresh")
    p.add_argument("--test-only", action="store_true",
                   help="only evaluate (with --resume or --weights FILE) and print the COCO tables")
    p.add_argument("--amp", action="store_true",
                   help="mixed precision: float16 + GradScaler on CUDA, bfloat16 on CPU (slow without bf16 hardware)")
    p.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"],
                   help="channels_last memory format (auto: on for CPU, where it is faster)")
    p.add_argument("--seed", default=0, type=int, help="seed for the split, initial weights and shuffling")
    p.add_argument("--test-size", default=50, type=int, help="images held out for testing (the last 50 of the split)")
    p.add_argument("--train-size", default=None, type=int, help="training images; None means all the rest")
    p.add_argument("--min-size", default=800, type=int, help="model input: shorter side resized to this")
    p.add_argument("--max-size", default=1333, type=int, help="model input: longer side at most this")
    p.add_argument("--aspect-ratio-group-factor", default=-1, type=int,
                   help="group batches by aspect ratio, K: 2K+1 log-spaced bin edges (-1: off, as in the tutorial)")
    p.add_argument("--check-forward", action="store_true",
                   help="the tutorial's 'testing forward()' check: one training batch and inference, then exit")
    p.add_argument("--demo", action="store_true",
                   help="offline demo: synthetic data, random init and a from-scratch recipe (see DEMO_RECIPE)")
    p.add_argument("--predict", nargs="+", default=None, metavar="PATH",
                   help="images or folders to run a trained model (--weights FILE) on; writes PNG + JSON")
    p.add_argument("--score-threshold", default=0.5, type=float, help="--predict / figures: lowest score drawn")
    p.add_argument("--dist-url", default="env://", help="url used to set up distributed training")
    return p


# The offline demo: synthetic pedestrians, random init (nothing to download). The tutorial's
# SGD lr 0.005 diverges from random init, and its ResNet-50 model learns too slowly on a CPU;
# these values reached bbox AP > 0.5 in ~10 minutes on 2 CPU cores (README, "The offline demo").
# Flags given explicitly still win.
DEMO_RECIPE = dict(
    data_path="data/SyntheticPed", model="maskrcnn_resnet18", weights="none", opt="adamw", lr=6e-4,
    weight_decay=1e-4, clip_grad_norm=5.0, lr_scheduler="cosineannealinglr", epochs=7, batch_size=2,
    min_size=128, max_size=224,
    test_size=50, print_freq=50, workers=1,
)
DEMO_DATA = dict(num_images=480, height_range=(128, 160), width_range=(96, 224))
DEMO_MODEL_KWARGS = dict(
    rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=150,
    rpn_post_nms_top_n_test=50, rpn_batch_size_per_image=128, box_batch_size_per_image=32,
    box_detections_per_img=20,
)


def demo_anchor_generator():
    """Anchors for the demo's small images: one size per FPN level, 16-256 px, upright shapes.

    The default sizes (32-512 px) exceed most pedestrians in a 128-px image, and the default
    aspect ratios (0.5, 1, 2; height/width) miss the ~2.5:1 pedestrian shape.
    """
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    return AnchorGenerator(((16,), (32,), (64,), (128,), (256,)), ((1.0, 2.0, 3.0),) * 5)


def apply_demo_recipe(args):
    """Under --demo, every flag not given on the command line takes the demo's value."""
    defaults = get_args_parser(add_help=False)
    explicit = getattr(args, "explicit", None)
    for key, value in DEMO_RECIPE.items():
        typed = key in explicit if explicit is not None else getattr(args, key) != defaults.get_default(key)
        if not typed:
            setattr(args, key, value)
    return args


# ---------------------------------------------------------------------------------------
# 5. Pieces of main(): data, model, checkpoints, outputs
# ---------------------------------------------------------------------------------------

def prepare_data(args):
    """Make sure ``args.data_path`` holds a dataset: generate it (--demo) or download it.

    Under torchrun only rank 0 looks and writes; every rank then meets at the barrier (a
    rank deciding on its own could see rank 0's half-written folder and skip the wait).
    """
    if utils.is_main_process() and not os.path.isdir(os.path.join(args.data_path, "PNGImages")):
        if args.demo:
            from synthetic_data import make_synthetic_pennfudan

            print(f"Generating {DEMO_DATA['num_images']} synthetic images in {args.data_path}")
            make_synthetic_pennfudan(args.data_path, seed=args.seed, **DEMO_DATA)
        elif os.path.basename(os.path.normpath(args.data_path)) == "PennFudanPed":
            # only a folder named after the dataset is downloaded; any other path is probably a typo
            download_pennfudan(args.data_path)
    if utils.get_world_size() > 1:
        torch.distributed.barrier()  # the other ranks wait until rank 0 has written the data


def split_indices(n, test_size, train_size, seed):
    """Seeded random split (the tutorial's unseeded randperm makes runs unrepeatable)."""
    if test_size >= n:
        raise DatasetError(f"--test-size {test_size} leaves no training image out of {n}; use a smaller value.")
    indices = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    train, test = indices[:-test_size] if test_size > 0 else indices, indices[-test_size:] if test_size > 0 else []
    if train_size is not None:
        train = train[:train_size]
    return train, test


def make_loaders(dataset, dataset_test, batch_size, workers, distributed, seed, aspect_ratio_group_factor=-1,
                 pin_memory=False):
    """Train/test DataLoaders; returns (train_loader, test_loader, train_sampler, shuffle_generator)."""
    shuffle_gen = torch.Generator().manual_seed(seed)
    if distributed:
        train_sampler = torch.utils.data.distributed.DistributedSampler(dataset, seed=seed)
        test_sampler = torch.utils.data.distributed.DistributedSampler(dataset_test, shuffle=False)
    else:
        train_sampler = torch.utils.data.RandomSampler(dataset, generator=shuffle_gen)
        test_sampler = torch.utils.data.SequentialSampler(dataset_test)
    if aspect_ratio_group_factor >= 0:
        from group_by_aspect_ratio import GroupedBatchSampler, create_aspect_ratio_groups

        group_ids = create_aspect_ratio_groups(dataset, k=aspect_ratio_group_factor)
        batch_sampler = GroupedBatchSampler(train_sampler, group_ids, batch_size)
    else:
        batch_sampler = torch.utils.data.BatchSampler(train_sampler, batch_size, drop_last=True)
    common = dict(num_workers=workers, collate_fn=utils.collate_fn, pin_memory=pin_memory,
                  persistent_workers=workers > 0)
    train_loader = torch.utils.data.DataLoader(dataset, batch_sampler=batch_sampler, **common)
    test_loader = torch.utils.data.DataLoader(dataset_test, batch_size=1, sampler=test_sampler, **common)
    return train_loader, test_loader, train_sampler, shuffle_gen


def load_weights_file(path):
    """A checkpoint of ours or a plain state dict, loaded without running pickled code."""
    if not os.path.isfile(path):
        raise TutorialError(f"{path}: no such weights file. Pass a checkpoint written by training "
                            f"(e.g. output/checkpoint.pth), DEFAULT or none.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, or a pickle that weights_only refuses
        raise TutorialError(f"{path}: cannot load weights ({str(e).splitlines()[0][:160]}).") from None
    return ckpt if "model" in ckpt else {"model": ckpt}


def build_model(args, num_classes=2, checkpoint=None):
    """The model named by ``--model``; its layout follows the weights it will receive."""
    kwargs = dict(min_size=args.min_size, max_size=args.max_size)
    if args.demo:
        kwargs.update(DEMO_MODEL_KWARGS, rpn_anchor_generator=demo_anchor_generator())
    if checkpoint is not None:
        # built like the run that wrote the checkpoint, so every tensor finds its place
        trained = checkpoint.get("args", {})
        name = trained.get("model", args.model)
        weights = "layout" if str(trained.get("weights", "DEFAULT")) == "DEFAULT" else None
        model = MODELS[name](num_classes, weights=weights, **kwargs)
        try:
            model.load_state_dict(checkpoint["model"])
        except RuntimeError as e:
            raise TutorialError(f"the weights do not fit --model {name}: {str(e).splitlines()[0][:200]}") from None
        return model
    weights = None if str(args.weights).lower() == "none" else args.weights
    return MODELS[args.model](num_classes, weights=weights, **kwargs)


def make_optimizer(args, model):
    params = [p for p in model.parameters() if p.requires_grad]
    if args.opt == "adamw":
        return torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)


def make_lr_scheduler(args, optimizer):
    if args.lr_scheduler == "cosineannealinglr":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    # the tutorial: decrease the learning rate by 10x every 3 epochs
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.lr_step_size, gamma=args.lr_gamma)


def coco_summary(coco_evaluator):
    """{"bbox": {"AP": ..., ...}, "segm": {...}}: the 12 COCO numbers of each IoU type, named."""
    return {iou: dict(zip(COCO_STAT_NAMES, (float(x) for x in ev.stats)))
            for iou, ev in coco_evaluator.coco_eval.items()}


def write_json_atomic(obj, path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def plot_curves(records, path):
    """Training loss per iteration and COCO AP per epoch, side by side."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(11, 4))
    losses = [x for r in records for x in r.get("iteration_losses", [])]
    ax_loss.plot(range(1, len(losses) + 1), losses, lw=0.8, label="loss (sum of terms)")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_yscale("log")
    ax_loss.set_title("Training loss")
    ax_loss.grid(alpha=0.3)
    epochs = [r["epoch"] for r in records]
    for iou in ("bbox", "segm"):
        if all(iou in r for r in records):
            ax_ap.plot(epochs, [r[iou]["AP"] for r in records], "o-", label=f"{iou} AP@[.5:.95]")
            ax_ap.plot(epochs, [r[iou]["AP50"] for r in records], "s--", label=f"{iou} AP@.5")
    ax_ap.set_xlabel("epoch")
    ax_ap.set_ylabel("COCO average precision")
    ax_ap.set_ylim(0, 1)
    ax_ap.set_xticks(epochs)
    ax_ap.set_title("Test-set AP per epoch")
    ax_ap.grid(alpha=0.3)
    ax_ap.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_predictions(image, prediction, score_threshold=0.5):
    """The tutorial's final figure: boxes with scores and masks drawn over a uint8 image."""
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    image = (255.0 * (image - image.min()) / (image.max() - image.min() + 1e-8)).to(torch.uint8)[:3]
    keep = prediction["scores"] >= score_threshold
    labels = [f"pedestrian: {s:.3f}" for s in prediction["scores"][keep]]
    if not keep.any():
        return image
    out = draw_bounding_boxes(image, prediction["boxes"][keep].long(), labels, colors="red", width=2)
    if "masks" in prediction:
        masks = (prediction["masks"][keep] > 0.7).squeeze(1)
        out = draw_segmentation_masks(out, masks, alpha=0.5, colors="blue")
    return out


def save_png(chw_uint8, path):
    Image.fromarray(chw_uint8.permute(1, 2, 0).cpu().numpy()).save(path)


def save_preview(dataset_root, path):
    """The tutorial's first figure: one image and its instance mask side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img_path, mask_path = pair_images_and_masks(dataset_root)[0]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 5))
    a.imshow(read_rgb(img_path).permute(1, 2, 0).numpy())
    a.set_title(os.path.basename(img_path))
    b.imshow(read_instance_mask(mask_path).numpy(), cmap="tab10", interpolation="nearest")
    b.set_title(os.path.basename(mask_path) + " (value k = k-th pedestrian)")
    for ax in (a, b):
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.inference_mode()
def save_prediction_figures(model, dataset_test, device, out_dir, score_threshold, count=4):
    """Overlays for a few test images; FudanPed00046 (the tutorial's figure) first when present."""
    os.makedirs(out_dir, exist_ok=True)
    base = dataset_test.dataset if isinstance(dataset_test, torch.utils.data.Subset) else dataset_test
    order = list(range(len(dataset_test)))
    names = [base.imgs[dataset_test.indices[i]] if isinstance(dataset_test, torch.utils.data.Subset)
             else base.imgs[i] for i in order]
    if "FudanPed00046.png" in names:
        order.insert(0, order.pop(names.index("FudanPed00046.png")))
    model.eval()
    written = []
    for i in order[:count]:
        image, _ = dataset_test[i]
        prediction = model([image.to(device)])[0]
        path = os.path.join(out_dir, names[i])
        save_png(draw_predictions(image, {k: v.cpu() for k, v in prediction.items()}, score_threshold), path)
        written.append(path)
    return written


def list_images(paths):
    found = []
    for p in paths:
        if os.path.isdir(p):
            found += sorted(os.path.join(p, f) for f in os.listdir(p)
                            if f.lower().endswith((".png", ".jpg", ".jpeg")))
        elif os.path.isfile(p):
            found.append(p)
        else:
            raise TutorialError(f"{p}: no such file or folder to predict on.")
    if not found:
        raise TutorialError(f"no .png/.jpg images in {' '.join(paths)}.")
    return found


@torch.inference_mode()
def predict(model, paths, device, out_dir, score_threshold):
    """Write ``out_dir/<stem>.png`` (overlay) and ``<stem>.json`` (detections, masks as COCO RLE)."""
    from pycocotools import mask as mask_util

    os.makedirs(out_dir, exist_ok=True)
    model.eval()
    results = []
    for path in list_images(paths):
        image = F.to_dtype(read_rgb(path), torch.float32, scale=True)
        pred = {k: v.cpu() for k, v in model([image.to(device)])[0].items()}
        keep = pred["scores"] >= score_threshold
        detections = []
        for j in torch.nonzero(keep).flatten().tolist():
            det = dict(box_xyxy=[round(float(v), 2) for v in pred["boxes"][j]], score=float(pred["scores"][j]),
                       label=int(pred["labels"][j]))
            if "masks" in pred:
                binary = (pred["masks"][j, 0] > 0.5).numpy().astype("uint8")
                rle = mask_util.encode(binary.copy(order="F"))
                det["mask_rle"] = dict(size=list(rle["size"]), counts=rle["counts"].decode("ascii"))
            detections.append(det)
        stem = os.path.splitext(os.path.basename(path))[0]
        record = dict(image=path, height=image.shape[-2], width=image.shape[-1],
                      score_threshold=score_threshold, detections=detections)
        write_json_atomic(record, os.path.join(out_dir, stem + ".json"))
        save_png(draw_predictions(image, pred, score_threshold), os.path.join(out_dir, stem + ".png"))
        print(f"{path}: {len(detections)} detection(s) -> {os.path.join(out_dir, stem)}.png/.json")
        results.append(record)
    return results


def check_forward(model, data_loader, device):
    """The tutorial's 'testing forward()' section: losses on one batch, then inference on random images."""
    images, targets = next(iter(data_loader))
    images = [image.to(device) for image in images]
    targets = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in t.items()} for t in targets]
    model.train()
    output = model(images, targets)  # returns losses and detections
    print(output)
    model.eval()
    with torch.inference_mode():
        x = [torch.rand(3, 300, 400, device=device), torch.rand(3, 500, 400, device=device)]
        predictions = model(x)  # returns predictions
    print(predictions[0])
    return output, predictions


# ---------------------------------------------------------------------------------------
# 6. Putting everything together: train, evaluate, save, plot
# ---------------------------------------------------------------------------------------

def main(args):
    """Run the tutorial; returns a dict with the final metrics (``bbox``/``segm``: 12 named COCO numbers)."""
    utils.init_distributed_mode(args)
    if args.demo:
        apply_demo_recipe(args)
        if utils.is_main_process() and not (args.predict or args.test_only):
            print(f"Demo: synthetic data in {args.data_path}, --model {args.model}, --weights {args.weights}, "
                  f"{args.opt} lr {args.lr}, {args.epochs} epochs (README.md, 'The offline demo')")
    # train on the GPU or on the CPU, if a GPU is not available
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" \
        else torch.device(args.device)
    if args.distributed and device.type == "cuda":
        device = torch.device("cuda", args.gpu)
    torch.manual_seed(args.seed)
    output_dir = args.output_dir if utils.is_main_process() else ""
    if output_dir:
        utils.mkdir(output_dir)

    # weights from a file: our checkpoint (--resume, or --weights FILE) or a plain state dict
    weights_is_file = str(args.weights) not in ("DEFAULT", "none", "None")
    checkpoint = load_weights_file(args.resume or args.weights) if (args.resume or weights_is_file) else None

    # our dataset has two classes only - background and person
    num_classes = 2
    if args.predict:
        if checkpoint is None:
            raise TutorialError("--predict needs trained weights: --weights FILE (e.g. output/checkpoint.pth).")
        if not utils.is_main_process():
            return {"predictions": []}  # under torchrun, one process predicts and writes the files
        model = build_model(args, num_classes, checkpoint).to(device)
        out = os.path.join(args.output_dir or ".", "predict")
        return {"predictions": predict(model, args.predict, device, out, args.score_threshold)}

    # use our dataset and defined transformations
    prepare_data(args)
    if utils.is_main_process():
        summary = check_dataset(args.data_path)
        print(f"Dataset {args.data_path}: {summary['images']} images, {summary['instances']} instances, "
              f"{summary['negative_images']} without pedestrians")
    dataset = PennFudanDataset(args.data_path, get_transform(train=True))
    dataset_test = PennFudanDataset(args.data_path, get_transform(train=False))
    train_idx, test_idx = split_indices(len(dataset), args.test_size, args.train_size, args.seed)
    dataset = torch.utils.data.Subset(dataset, train_idx)
    dataset_test = torch.utils.data.Subset(dataset_test, test_idx)
    if len(dataset) < args.batch_size:
        raise DatasetError(f"{args.data_path}: {len(dataset)} training image(s) is fewer than one batch "
                           f"(-b {args.batch_size}); lower --batch-size or --test-size.")

    # Workers beyond the core count only compete with the model for the CPU.
    workers = min(args.workers, os.cpu_count() or 1)
    if workers < args.workers:
        print(f"Using {workers} data-loading workers (-j {args.workers} capped at the {os.cpu_count()} CPU cores)")
    data_loader, data_loader_test, train_sampler, shuffle_gen = make_loaders(
        dataset, dataset_test, args.batch_size, workers, args.distributed, args.seed,
        args.aspect_ratio_group_factor, pin_memory=device.type == "cuda")

    # get the model using our helper function and move it to the right device
    model = build_model(args, num_classes, checkpoint)
    model.to(device)
    if use_channels_last(device, args.channels_last):
        model.to(memory_format=torch.channels_last)  # oneDNN's CPU convolutions are faster in NHWC
    model_without_ddp = model
    if args.distributed:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[args.gpu] if args.gpu is not None else None)
        model_without_ddp = model.module

    # construct an optimizer and a learning rate scheduler
    optimizer = make_optimizer(args, model_without_ddp)
    lr_scheduler = make_lr_scheduler(args, optimizer)
    scaler = torch.amp.GradScaler(device.type) if args.amp else None

    start_epoch = 0
    records = []
    if args.resume and not args.test_only:
        # the model already holds the checkpoint's weights; restore the rest of the training state
        optimizer.load_state_dict(checkpoint["optimizer"])
        lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
        if scaler is not None and "scaler" in checkpoint:
            scaler.load_state_dict(checkpoint["scaler"])
        start_epoch = checkpoint["epoch"] + 1
        records = [r for r in checkpoint.get("records", []) if r["epoch"] < start_epoch]
        print(f"Resumed from {args.resume}: continuing at epoch {start_epoch}")

    # the COCO ground truth of the test set is built once, not at every evaluation
    coco_gt = get_coco_api_from_dataset(dataset_test)

    if args.check_forward:
        output, _ = check_forward(model_without_ddp, data_loader, device)
        return {"losses": {k: v.item() for k, v in output.items()}}

    if args.test_only:
        coco_evaluator = evaluate(model, data_loader_test, device=device, coco_gt=coco_gt)
        return coco_summary(coco_evaluator)

    if output_dir:
        save_preview(args.data_path, os.path.join(output_dir, "preview.png"))
    ckpt_path = os.path.join(output_dir, "checkpoint.pth") if output_dir else None
    print("Start training")
    start_time = time.time()
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, args.epochs):
            # Each epoch's randomness (shuffling, flips) depends on (seed, epoch) alone, so a
            # resumed run repeats the uninterrupted one exactly. Under torchrun each rank
            # draws its own flips (rank 0 keeps the single-process stream).
            torch.manual_seed(args.seed + epoch + 1_000_003 * utils.get_rank())
            shuffle_gen.manual_seed(args.seed + epoch)
            if args.distributed:
                train_sampler.set_epoch(epoch)
            epoch_start = time.time()
            iteration_losses = []
            # train for one epoch, printing every print_freq iterations
            metric_logger = train_one_epoch(model, optimizer, data_loader, device, epoch,
                                            print_freq=args.print_freq, scaler=scaler,
                                            loss_history=iteration_losses, clip_grad_norm=args.clip_grad_norm)
            lr = optimizer.param_groups[0]["lr"]
            # update the learning rate
            lr_scheduler.step()
            train_time = time.time() - epoch_start
            # evaluate on the test dataset
            coco_evaluator = evaluate(model, data_loader_test, device=device, coco_gt=coco_gt)
            record = dict(epoch=epoch, lr=lr, train_time_s=round(train_time, 2),
                          epoch_time_s=round(time.time() - epoch_start, 2),
                          train={k: m.global_avg for k, m in metric_logger.meters.items() if k != "lr"},
                          iteration_losses=[r["loss"] for r in iteration_losses])
            record.update(coco_summary(coco_evaluator))
            records.append(record)
            if output_dir:
                checkpoint_out = {
                    "model": model_without_ddp.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "lr_scheduler": lr_scheduler.state_dict(),
                    "epoch": epoch,
                    "args": dict(vars(args)),  # a plain dict: weights_only=True loads it
                    "records": records,
                }
                if scaler is not None:
                    checkpoint_out["scaler"] = scaler.state_dict()
                utils.save_on_master(checkpoint_out, ckpt_path)
                write_json_atomic(records, os.path.join(output_dir, "metrics.json"))
                plot_curves(records, os.path.join(output_dir, "curves.png"))
    except KeyboardInterrupt:
        kept = ckpt_path if ckpt_path and os.path.exists(ckpt_path) else None
        done = f"epoch {epoch - 1} is the last complete one" if epoch > start_epoch else "no epoch completed"
        raise TrainingInterrupted(f"interrupted during epoch {epoch}: {done}"
                                  + (f", saved in {kept}" if kept else ""), checkpoint=kept) from None
    except NonFiniteLossError as e:
        kept = f"; the last good checkpoint is {ckpt_path}" if ckpt_path and os.path.exists(ckpt_path) else ""
        raise TutorialError(f"{e}{kept}") from None

    total = time.time() - start_time
    print(f"Training time {time.strftime('%H:%M:%S', time.gmtime(total))}")
    print("That's it!")

    if output_dir:
        written = save_prediction_figures(model_without_ddp, dataset_test, device,
                                          os.path.join(output_dir, "predictions"), args.score_threshold)
        if written:
            print(f"Saved the prediction figure(s) to {os.path.dirname(written[0])}/ "
                  f"and curves.png, metrics.json, checkpoint.pth to {output_dir}/")
    result = dict(records[-1]) if records else {}
    result["records"] = records
    return result


class TrainingInterrupted(TutorialError):
    """Ctrl-C: the checkpoint on disk (``.checkpoint``, or None) holds the last complete epoch."""

    def __init__(self, message, checkpoint=None):
        super().__init__(message)
        self.checkpoint = checkpoint


def resume_command(argv, checkpoint):
    """The command line that continues an interrupted run: the same options plus --resume."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--resume":
            skip = True
        elif not arg.startswith("--resume="):
            kept.append(arg)
    return " ".join(shlex.quote(a) for a in ["python", "tv_training.py", *kept, "--resume", checkpoint])


def cli(argv=None):
    """Command-line entry: user errors print one line (no traceback) and exit non-zero.

    Returns what ``main`` returns. Under torchrun, a run that ends normally destroys its
    process group (after an error the process just exits: tearing down a group whose other
    ranks may still wait in a collective could block, and torchrun stops them anyway).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = get_args_parser().parse_args(argv)
    try:
        result = main(args)
    except TrainingInterrupted as e:
        hint = f"; resume with: {resume_command(argv, e.checkpoint)}" if e.checkpoint else ""
        print(f"\n{e}{hint}", file=sys.stderr)
        sys.exit(130)
    except TutorialError as e:
        if utils.is_dist_avail_and_initialized() and not utils.is_main_process():
            # under torchrun the other ranks' prints are silenced: an error must still show
            print(f"[rank {utils.get_rank()}] error: {e}", file=sys.stderr, force=True)
        else:
            print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    utils.cleanup_distributed()
    return result


if __name__ == "__main__":
    cli()
