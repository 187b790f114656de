"""torchvision's stronger and lighter detectors (not the tutorial's): ``--model maskrcnn_v2``,
``fasterrcnn_v2`` (torchvision's improved ResNet-50 FPN recipe, COCO box AP 46.7-47.4) and
``fasterrcnn_mobilenet_v3`` (MobileNetV3-Large FPN, the one that suits a CPU). Each replaces
its predictors for the data's classes as the tutorial does for ``maskrcnn``."""

import torchvision
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor


def _new_box_predictor(model, num_classes):
    # the v2 box head ends in a 1024-wide linear layer too: only the class count changes
    in_features = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes)
    return model


def get_model_maskrcnn_v2(num_classes, weights="DEFAULT", **kwargs):
    """``maskrcnn_resnet50_fpn_v2`` with new box and mask predictors for ``num_classes``."""
    model = torchvision.models.detection.maskrcnn_resnet50_fpn_v2(weights=weights, **kwargs)
    _new_box_predictor(model, num_classes)
    in_channels = model.roi_heads.mask_predictor.conv5_mask.in_channels
    model.roi_heads.mask_predictor = MaskRCNNPredictor(in_channels, 256, num_classes)
    return model


def get_model_fasterrcnn_v2(num_classes, weights="DEFAULT", **kwargs):
    """``fasterrcnn_resnet50_fpn_v2`` with a new box predictor for ``num_classes``."""
    return _new_box_predictor(torchvision.models.detection.fasterrcnn_resnet50_fpn_v2(weights=weights, **kwargs),
                              num_classes)


def get_model_fasterrcnn_mobilenet_v3(num_classes, weights="DEFAULT", **kwargs):
    """``fasterrcnn_mobilenet_v3_large_fpn`` with a new box predictor for ``num_classes``."""
    return _new_box_predictor(
        torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(weights=weights, **kwargs), num_classes)
