"""The offline demo (``--demo``): synthetic pedestrians, a small Mask R-CNN, a from-scratch recipe.

The tutorial fine-tunes COCO weights; offline there are none, and from random init its
ResNet-50 model learns far too slowly on a CPU (README.md, "The offline demo"). The demo
keeps Mask R-CNN and the tutorial's loops, and changes the model size, the image size and the
optimiser. Flags typed on the command line still win over the recipe.
"""

import argparse

import torchvision
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

import utils


# The offline demo: synthetic pedestrians, random init (nothing to download). The tutorial's
# SGD lr 0.005 diverges from random init, and its ResNet-50 model learns too slowly on a CPU;
# these values are the README's measured recipe ("The offline demo"). Typed flags still win.
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

# Anchors for the demo's small images: one size per FPN level, 16-256 px, upright shapes. The
# default sizes (32-512 px) exceed most pedestrians in a 128-px image, and the default aspect
# ratios (0.5, 1, 2; height/width) miss the ~2.5:1 pedestrian shape.
DEMO_ANCHORS = dict(sizes=((16,), (32,), (64,), (128,), (256,)), aspect_ratios=((1.0, 2.0, 3.0),) * 5)


def make_demo_data(root, seed=0):
    """Write the demo's synthetic images (``DEMO_DATA``) to ``root`` in the Penn-Fudan layout."""
    from synthetic_data import make_synthetic_pennfudan

    print(f"Generating {DEMO_DATA['num_images']} synthetic images in {root}")
    make_synthetic_pennfudan(root, seed=seed, **DEMO_DATA)


class ExplicitArgumentParser(argparse.ArgumentParser):
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


def apply_demo_recipe(args, parser):
    """Under --demo, every flag not typed on the command line takes the demo's value.

    Typed flags are ``args.explicit`` (from ``ExplicitArgumentParser``); without it, a flag
    that differs from ``parser``'s default counts as typed.
    """
    explicit = getattr(args, "explicit", None)
    for key, value in DEMO_RECIPE.items():
        typed = key in explicit if explicit is not None else getattr(args, key) != parser.get_default(key)
        if not typed:
            setattr(args, key, value)
    if utils.is_main_process() and not (getattr(args, "predict", None) or getattr(args, "test_only", False)):
        print(f"Demo: synthetic data in {args.data_path}, --model {args.model}, --weights {args.weights}, "
              f"{args.opt} lr {args.lr}, {args.epochs} epochs (README.md, 'The offline demo')")
    return args


def model_settings(model_name):
    """The demo's model settings for ``model_name``: (builder kwargs, anchors or None).

    The small RPN/RoI settings apply to every model; the small anchors to the FPN models (the
    MobileNet model of tutorial section 2 brings its own single-level anchors).
    """
    return dict(DEMO_MODEL_KWARGS), (None if model_name == "mobilenet" else DEMO_ANCHORS)


def get_model_maskrcnn_resnet18(num_classes, weights=None, **kwargs):
    """Not in the tutorial: a Mask R-CNN small enough to train from scratch on a CPU (the demo).

    ResNet-18 + FPN with 128 channels (instead of ResNet-50 + FPN with 256), a 256-wide box
    head (instead of 1024) and 2 mask-head convolutions (instead of 4): 14M parameters against
    44M. ``weights``: None (random init) or "DEFAULT" (ImageNet ResNet-18 backbone, downloaded).
    BatchNorm stays trainable. ``kwargs`` go to ``MaskRCNN``.
    """
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads
    from torchvision.models.detection.rpn import RPNHead
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    body = torchvision.models.resnet18(weights=weights)
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
    return MaskRCNN(backbone, num_classes=None, **heads)
