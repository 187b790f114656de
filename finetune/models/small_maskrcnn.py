"""The small Mask R-CNN (``--model maskrcnn_resnet18``, the demo's: ResNet-18 + FPN, slim heads,
small enough to train from scratch on a CPU) and the demo's model settings (RPN/RoI sizes, anchors)."""

import torchvision
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

DEMO_MODEL_KWARGS = dict(
    rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=150,
    rpn_post_nms_top_n_test=50, rpn_batch_size_per_image=128, box_batch_size_per_image=32,
    box_detections_per_img=20,
)


# Anchors for the demo's small images: one size per FPN level, 16-256 px, upright shapes. The
# default sizes (32-512 px) exceed most pedestrians in a 128-px image, and the default aspect
# ratios (0.5, 1, 2; height/width) miss the ~2.5:1 pedestrian shape.
DEMO_ANCHORS = dict(sizes=((16,), (32,), (64,), (128,), (256,)), aspect_ratios=((1.0, 2.0, 3.0),) * 5)


# The small model (--model maskrcnn_resnet18, with or without --demo): without ResNet's last stage it
# trains faster and as well on 128-px images, and 4 mask-head convolutions give finer masks
# (docs/demo.md). Under --demo its anchors are DEMO_ANCHORS' first four (one pyramid level fewer).
DEMO_SMALL_MODEL = dict(resnet_stages=3, mask_head_convs=4)


# Models that keep their own anchors under --demo: section 2's MobileNetV2 has one pyramid level and
# MobileNetV3-FPN three (not 5), and torchvision's v2 builders pass rpn_anchor_generator themselves.
OWN_ANCHORS = ("mobilenet", "fasterrcnn_mobilenet_v3", "maskrcnn_v2", "fasterrcnn_v2")


def model_settings(model_name):
    """The demo's model settings for ``model_name``: (builder kwargs, anchors or None).

    The small RPN/RoI settings apply to every model; the small anchors to the FPN models but those
    of ``OWN_ANCHORS``. The small model takes ``DEMO_SMALL_MODEL`` (no last ResNet stage, so one pyramid level fewer).
    """
    if model_name in OWN_ANCHORS:
        return dict(DEMO_MODEL_KWARGS), None
    if model_name == "maskrcnn_resnet18":
        anchors = {k: v[:DEMO_SMALL_MODEL['resnet_stages'] + 1] for k, v in DEMO_ANCHORS.items()}
        return dict(DEMO_MODEL_KWARGS, **DEMO_SMALL_MODEL), anchors
    return dict(DEMO_MODEL_KWARGS), DEMO_ANCHORS


def get_model_maskrcnn_resnet18(num_classes, weights=None, resnet_stages=3, mask_head_convs=4, **kwargs):
    """Not in the tutorial: a Mask R-CNN small enough to train from scratch on a CPU (the demo).

    ResNet-18 + FPN with 128 channels (instead of ResNet-50 + FPN with 256) and a 256-wide box
    head (instead of 1024). By default (``DEMO_SMALL_MODEL``) without ResNet's last stage
    (``resnet_stages=3``: at 128 px it sees 4x5 pixels, and its weights, 60% of the model's, cost
    optimizer time for little) and with torchvision's 4 mask-head convolutions (finer masks for
    the pedestrians' thin limbs): 5.8M parameters against 44M; ``resnet_stages=4`` keeps the last
    stage (one pyramid level more). ``weights``: None (random init) or "DEFAULT" (ImageNet
    ResNet-18 backbone, downloaded). BatchNorm stays trainable. ``kwargs`` go to ``MaskRCNN``.
    """
    if resnet_stages not in (3, 4) or not (isinstance(mask_head_convs, int) and mask_head_convs >= 1):
        raise ValueError(f"resnet_stages must be 3 or 4 and mask_head_convs >= 1, got {resnet_stages!r} and "
                         f"{mask_head_convs!r}")
    body = torchvision.models.resnet18(weights=weights)
    channels = 128
    # one pyramid level per stage (strides 4-32, or 4-16 with 3 stages), + a max-pooled one
    layers = {f"layer{k + 1}": str(k) for k in range(resnet_stages)}
    backbone = BackboneWithFPN(body, layers, [64, 128, 256, 512][:resnet_stages], channels,
                               extra_blocks=LastLevelMaxPool())
    levels = list(layers.values())  # the RoI poolers read these (not the max-pooled one), as MaskRCNN's default
    # MaskRCNN's default anchors, unless given; the RPN head predicts one score per anchor shape
    anchors = kwargs.pop("rpn_anchor_generator", None) or \
        AnchorGenerator(((32,), (64,), (128,), (256,), (512,))[:resnet_stages + 1], ((0.5, 1.0, 2.0),) * 5)
    heads = dict(
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(channels, anchors.num_anchors_per_location()[0]),
        box_roi_pool=MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=2),
        mask_roi_pool=MultiScaleRoIAlign(levels, output_size=14, sampling_ratio=2),
        box_head=TwoMLPHead(channels * 7 * 7, 256),
        box_predictor=FastRCNNPredictor(256, num_classes),
        mask_head=MaskRCNNHeads(channels, [channels] * mask_head_convs, 1),
        mask_predictor=MaskRCNNPredictor(channels, channels, num_classes),
    )
    heads.update(kwargs)
    return MaskRCNN(backbone, num_classes=None, **heads)
