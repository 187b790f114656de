"""The model builders of tv_training.py (and the small Mask R-CNN) through finetune/models
(pretrained.py, specs.py), all offline."""

import os
import urllib.error

import pytest
import torch
import torchvision
from conftest import BOX_LOSSES, MASK_LOSSES, TINY, build
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.ops import FrozenBatchNorm2d

import tv_training
from finetune.errors import TutorialError
from finetune.models import pretrained, small_maskrcnn, specs

H, W = 60, 80  # input image size (the model resizes to min_size 64 internally)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def maskrcnn():
    torch.manual_seed(0)
    return build("maskrcnn", None, **TINY)


@pytest.fixture(scope="module")
def layout_model():
    torch.manual_seed(1)
    return build("maskrcnn", "layout")


def sample(with_masks=True):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, H, W, generator=g)
    boxes = torch.tensor([[10.0, 5.0, 30.0, 50.0], [40.0, 10.0, 70.0, 58.0]])
    target = {"boxes": boxes, "labels": torch.tensor([1, 1])}
    if with_masks:
        masks = torch.zeros(2, H, W, dtype=torch.uint8)
        for i, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
            masks[i, y1:y2, x1:x2] = 1
        target["masks"] = masks
    return image, target


def body_norm_layers(model):
    return [m for m in model.backbone.body.modules() if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d))]


# --------------------------------------------------------------------------- heads and layouts


@pytest.mark.parametrize("num_classes", [2, 5])
def test_instance_segmentation_heads(num_classes, maskrcnn):
    model = maskrcnn if num_classes == 2 else build("maskrcnn", None, num_classes)
    assert isinstance(model, MaskRCNN)
    box_predictor = model.roi_heads.box_predictor
    assert isinstance(box_predictor, FastRCNNPredictor)
    assert box_predictor.cls_score.out_features == num_classes
    assert box_predictor.bbox_pred.out_features == 4 * num_classes
    assert box_predictor.cls_score.in_features == 1024  # TwoMLPHead representation size
    mask_predictor = model.roi_heads.mask_predictor
    assert isinstance(mask_predictor, MaskRCNNPredictor)
    assert mask_predictor.mask_fcn_logits.out_channels == num_classes
    assert mask_predictor.conv5_mask.in_channels == 256
    assert mask_predictor.conv5_mask.out_channels == 256  # hidden_layer
    # random init: trainable BatchNorm, every backbone parameter trains
    norms = body_norm_layers(model)
    assert norms and all(type(m) is torch.nn.BatchNorm2d for m in norms)
    assert all(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.roi_heads.parameters())


def test_layout_has_frozen_bn_and_three_trainable_stages(layout_model):
    norms = body_norm_layers(layout_model)
    assert norms and all(isinstance(m, FrozenBatchNorm2d) for m in norms)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in layout_model.backbone.body.modules())
    trainable = {name for name, p in layout_model.backbone.body.named_parameters() if p.requires_grad}
    frozen = {name for name, p in layout_model.backbone.body.named_parameters() if not p.requires_grad}
    assert trainable and frozen
    assert all(name.split(".")[0] in {"layer2", "layer3", "layer4"} for name in trainable)
    assert {name.split(".")[0] for name in frozen} == {"conv1", "layer1"}
    assert {name.split(".")[0] for name in trainable} == {"layer2", "layer3", "layer4"}
    # FPN and heads train
    assert all(p.requires_grad for p in layout_model.backbone.fpn.parameters())
    assert all(p.requires_grad for p in layout_model.rpn.parameters())
    assert layout_model.roi_heads.box_predictor.cls_score.out_features == 2


def test_layout_matches_pretrained_builder_configuration(layout_model):
    """The pretrained builder uses FrozenBatchNorm2d and 3 trainable layers: same keys, same freezing.

    A checkpoint fine-tuned from the COCO weights (built like this) must load strictly.
    """
    torch.manual_seed(2)
    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None,
                                   norm_layer=FrozenBatchNorm2d, trainable_layers=3)
    pretrained_like = MaskRCNN(backbone, num_classes=91)
    pretrained_like.roi_heads.box_predictor = FastRCNNPredictor(1024, 2)
    pretrained_like.roi_heads.mask_predictor = MaskRCNNPredictor(256, 256, 2)

    ref_grad = {n: p.requires_grad for n, p in pretrained_like.named_parameters()}
    got_grad = {n: p.requires_grad for n, p in layout_model.named_parameters()}
    assert got_grad == ref_grad

    ref_state = pretrained_like.state_dict()
    assert {k: v.shape for k, v in layout_model.state_dict().items()} == {k: v.shape for k, v in ref_state.items()}
    result = layout_model.load_state_dict(ref_state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(layout_model.backbone.body.layer1[0].bn1.running_var,
                       ref_state["backbone.body.layer1.0.bn1.running_var"])


def test_layout_state_dict_roundtrip(layout_model, tmp_path):
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": layout_model.state_dict()}, path)
    torch.manual_seed(3)
    other = build("maskrcnn", "layout")
    key = "roi_heads.mask_predictor.mask_fcn_logits.weight"
    assert not torch.equal(other.state_dict()[key], layout_model.state_dict()[key])  # different init
    checkpoint = torch.load(path, weights_only=True)
    other.load_state_dict(checkpoint["model"], strict=True)
    for name, value in layout_model.state_dict().items():
        assert torch.equal(other.state_dict()[name], value), name


def test_object_detection_model():
    model = build("fasterrcnn", None)
    assert isinstance(model, FasterRCNN) and not isinstance(model, MaskRCNN)
    assert isinstance(model.roi_heads.box_predictor, FastRCNNPredictor)
    assert model.roi_heads.box_predictor.cls_score.out_features == 2
    assert model.roi_heads.box_predictor.bbox_pred.out_features == 8
    assert not model.roi_heads.has_mask()
    assert model.roi_heads.mask_predictor is None


def test_mobilenet_model():
    model = build("mobilenet", None)
    assert isinstance(model, FasterRCNN)
    assert model.backbone.out_channels == 1280
    assert model.roi_heads.box_predictor.cls_score.out_features == 2
    assert model.roi_heads.box_predictor.bbox_pred.out_features == 8
    assert not model.roi_heads.has_mask()
    # one feature map: 5 sizes x 3 aspect ratios per location
    assert model.rpn.anchor_generator.num_anchors_per_location() == [15]
    assert model.roi_heads.box_roi_pool.featmap_names == ["0"]


# --------------------------------------------------------------------------- forward passes


def check_eval_outputs(outputs, with_masks):
    assert isinstance(outputs, list) and len(outputs) == 1
    out = outputs[0]
    expected = {"boxes", "labels", "scores"} | ({"masks"} if with_masks else set())
    assert set(out) == expected
    n = len(out["boxes"])
    assert out["boxes"].shape == (n, 4)
    assert out["labels"].shape == (n,) and out["scores"].shape == (n,)
    if n:  # boxes are in input-image coordinates
        assert out["boxes"][:, 0::2].min() >= 0 and out["boxes"][:, 0::2].max() <= W
        assert out["boxes"][:, 1::2].min() >= 0 and out["boxes"][:, 1::2].max() <= H
        assert set(out["labels"].tolist()) <= {1}
    if with_masks:
        assert out["masks"].shape == (n, 1, H, W)
        assert out["masks"].dtype == torch.float32
        if n:
            assert 0.0 <= out["masks"].min() and out["masks"].max() <= 1.0
    return n


def test_maskrcnn_forward_train_and_eval(maskrcnn):
    image, target = sample()
    maskrcnn.train()
    losses = maskrcnn([image], [target])
    assert set(losses) == MASK_LOSSES
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert maskrcnn.roi_heads.mask_predictor.mask_fcn_logits.weight.grad is not None
    maskrcnn.zero_grad(set_to_none=True)

    maskrcnn.eval()
    with torch.no_grad():
        outputs = maskrcnn([image])
    n = check_eval_outputs(outputs, with_masks=True)
    assert n <= TINY["box_detections_per_img"]


@pytest.mark.parametrize("name", ["fasterrcnn", "mobilenet"])
def test_box_models_forward_train_and_eval(name):
    torch.manual_seed(0)
    model = build(name, None, **TINY)
    image, target = sample(with_masks=False)
    model.train()
    losses = model([image], [target])
    assert set(losses) == BOX_LOSSES
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        check_eval_outputs(model([image]), with_masks=False)


@pytest.mark.parametrize("num_classes", [2, 5])
def test_small_maskrcnn_heads_and_size(num_classes, maskrcnn):
    """The small model with ResNet's last stage (resnet_stages=4): a Mask R-CNN with ResNet-18-FPN
    (128 channels) and slimmer heads."""
    torch.manual_seed(0)
    model = build("maskrcnn_resnet18", None, num_classes, resnet_stages=4, mask_head_convs=2, **TINY)
    assert isinstance(model, MaskRCNN) and model.backbone.out_channels == 128
    assert isinstance(model.backbone.body.layer4[0], torchvision.models.resnet.BasicBlock)  # ResNet-18/34 blocks
    assert len(model.backbone.body.layer4) == 2 and len(model.backbone.body.layer3) == 2  # ResNet-18
    box_predictor = model.roi_heads.box_predictor
    assert (box_predictor.cls_score.in_features, box_predictor.cls_score.out_features) == (256, num_classes)
    assert box_predictor.bbox_pred.out_features == 4 * num_classes
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == num_classes
    assert len(model.roi_heads.mask_head) == 2
    # every norm layer is a trainable BatchNorm, every parameter trains
    norms = body_norm_layers(model)
    assert norms and all(type(m) is torch.nn.BatchNorm2d for m in norms)
    assert all(p.requires_grad for p in model.parameters())
    # TINY's settings reached MaskRCNN
    assert model.transform.min_size == (64,) and model.roi_heads.detections_per_img == 10
    small = sum(p.numel() for p in model.parameters())
    large = sum(p.numel() for p in maskrcnn.parameters())
    assert 10e6 < small < large / 3


def test_small_maskrcnn_without_its_last_stage_is_the_demos():
    """By default (the demo's DEMO_SMALL_MODEL) without layer4, so one pyramid level fewer: the RoI
    poolers and the default anchors follow; 4 mask-head convolutions; bad values are refused."""
    torch.manual_seed(0)
    model = build("maskrcnn_resnet18", None, **TINY)
    assert not hasattr(model.backbone.body, "layer4") and len(model.backbone.fpn.inner_blocks) == 3
    assert len(model.roi_heads.mask_head) == small_maskrcnn.DEMO_SMALL_MODEL["mask_head_convs"] == 4
    assert model.roi_heads.box_roi_pool.featmap_names == ["0", "1", "2"]
    assert model.roi_heads.mask_roi_pool.featmap_names == ["0", "1", "2"]
    assert len(model.rpn.anchor_generator.sizes) == 4  # P2-P4 + the max-pooled level
    assert 4e6 < sum(p.numel() for p in model.parameters()) < 7e6
    image, target = sample()
    model.train()
    assert set(model([image], [target])) == MASK_LOSSES
    model.eval()
    with torch.no_grad():
        check_eval_outputs(model([image]), with_masks=True)
    kwargs, anchors = small_maskrcnn.model_settings("maskrcnn_resnet18")
    assert kwargs["resnet_stages"] == 3 and len(anchors["sizes"]) == len(anchors["aspect_ratios"]) == 4
    demo_model = build("maskrcnn_resnet18", None, **kwargs)
    assert len(demo_model.roi_heads.mask_head) == 4 and not hasattr(demo_model.backbone.body, "layer4")
    with pytest.raises(ValueError, match="resnet_stages"):
        build("maskrcnn_resnet18", None, resnet_stages=5)
    with pytest.raises(ValueError, match="mask_head_convs"):
        build("maskrcnn_resnet18", None, mask_head_convs=0)


@pytest.mark.parametrize("ratios", [None, (1.0, 2.0)], ids=["default-anchors", "two-anchor-shapes"])
def test_small_maskrcnn_forward_train_and_eval(ratios):
    torch.manual_seed(0)
    kwargs = dict(TINY)
    if ratios is not None:  # the RPN head follows the anchor generator's shapes per location
        kwargs["rpn_anchor_generator"] = AnchorGenerator(((16,), (32,), (64,), (128,)), (ratios,) * 4)
    model = build("maskrcnn_resnet18", None, **kwargs)
    assert model.rpn.head.cls_logits.out_channels == (3 if ratios is None else len(ratios))
    image, target = sample()
    model.train()
    losses = model([image], [target])
    assert set(losses) == MASK_LOSSES
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.backbone.body.conv1.weight.grad is not None  # the whole backbone trains
    model.eval()
    with torch.no_grad():
        check_eval_outputs(model([image]), with_masks=True)


def test_every_model_is_offered_and_builds_offline():
    """Each --model choice has its download recorded (for the offline message) and builds from
    random init without touching the network, with the tutorial's builders returning stock models."""
    choices = next(a.choices for a in tv_training.get_args_parser()._actions if a.dest == "model")
    assert sorted(choices) == sorted(tv_training.MODELS) == sorted(pretrained.PRETRAINED)
    assert tv_training.MODELS["maskrcnn_resnet18"] is small_maskrcnn.get_model_maskrcnn_resnet18
    expected_files = {"maskrcnn": "maskrcnn_resnet50_fpn_coco", "fasterrcnn": "fasterrcnn_resnet50_fpn_coco",
                      "mobilenet": "mobilenet_v2", "maskrcnn_resnet18": "resnet18"}
    for name, file_stem in expected_files.items():
        assert os.path.basename(pretrained.pretrained_url(name)).startswith(file_stem), name
    model = tv_training.get_model_instance_segmentation(3, weights=None, weights_backbone=None)
    assert type(model.transform) is torchvision.models.detection.transform.GeneralizedRCNNTransform  # not sped up
    assert type(model.roi_heads.box_roi_pool) is torchvision.ops.MultiScaleRoIAlign


# --------------------------------------------------------------------------- offline pretrained weights


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """An empty hub cache and a download that fails like a machine without network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    attempts = []

    def no_network(url, dst, *args, **kwargs):
        attempts.append(url)
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return attempts


@pytest.mark.parametrize("name, weights_file", [
    ("maskrcnn", "maskrcnn_resnet50_fpn_coco"),
    ("fasterrcnn", "fasterrcnn_resnet50_fpn_coco"),
])
def test_default_weights_offline_raises_tutorial_error(offline_hub, name, weights_file, capsys):
    with pytest.raises(TutorialError) as excinfo:
        build(name, "DEFAULT")
    message = str(excinfo.value)
    assert len(offline_hub) == 1 and weights_file in offline_hub[0]  # the download was attempted
    assert weights_file in message
    cache = torch.hub.get_dir()
    assert cache.startswith(os.environ["TORCH_HOME"])
    assert cache in message
    assert os.path.join(cache, "checkpoints") in message
    assert "--weights none" in message
    assert "offline" in message  # the cause is shown
    assert "\n" not in message  # one line for the command line


def test_mobilenet_default_weights_offline(offline_hub, capsys):
    with pytest.raises(TutorialError) as excinfo:
        build("mobilenet", "DEFAULT")
    message = str(excinfo.value)
    assert "mobilenet_v2" in message and torch.hub.get_dir() in message and "--weights none" in message


def test_small_maskrcnn_default_weights_offline(offline_hub):
    """DEFAULT means the ImageNet ResNet-18 backbone; offline, the message names its file."""
    with pytest.raises(TutorialError) as excinfo:
        build("maskrcnn_resnet18", "DEFAULT")
    message = str(excinfo.value)
    assert len(offline_hub) == 1 and "resnet18" in offline_hub[0]
    assert "resnet18" in message and torch.hub.get_dir() in message and "--weights none" in message


def test_build_detector_passes_weights_through(monkeypatch):
    """None and "layout" mean no download at all (weights_backbone=None too); DEFAULT reaches the
    builder, and its failure names the model's own weights file."""
    calls = []

    def fake_model_fn(num_classes, weights="DEFAULT", **kwargs):
        calls.append((num_classes, weights, kwargs))
        if weights is not None:
            raise urllib.error.URLError("offline")
        return "model"

    assert pretrained.build_detector(fake_model_fn, "maskrcnn", 3, None, min_size=64) == "model"
    assert calls[-1] == (3, None, {"min_size": 64, "weights_backbone": None})
    assert pretrained.build_detector(fake_model_fn, "mobilenet", 2, None) == "model"
    assert calls[-1] == (2, None, {})  # no backbone argument for a model that takes none
    with pytest.raises(TutorialError, match="maskrcnn_resnet50_fpn_coco") as excinfo:
        pretrained.build_detector(fake_model_fn, "maskrcnn", 2, "DEFAULT")
    assert calls[-1][1] == "DEFAULT"
    assert "--weights none" in str(excinfo.value)


def test_checkpoint_spec_rebuilds_the_model_it_describes(tmp_path):
    """A checkpoint's model_spec (model, classes, sizes, anchors) rebuilds the same model, with no
    flags retyped."""
    kwargs, anchors = small_maskrcnn.model_settings("maskrcnn_resnet18")
    spec = specs.model_spec("maskrcnn_resnet18", 3, "none", dict(min_size=64, max_size=96, **kwargs), anchors)
    torch.manual_seed(0)
    model = specs.build_model(tv_training.MODELS, spec, None)
    path = tmp_path / "c.pth"
    torch.save({"model": model.state_dict(), "model_spec": spec}, path)
    checkpoint = pretrained.load_weights_file(str(path))
    again = specs.build_model(tv_training.MODELS, specs.checkpoint_spec(checkpoint),
                                      checkpoint["model"])
    assert again.roi_heads.box_predictor.cls_score.out_features == 3
    assert again.transform.min_size == (64,) and again.roi_heads.detections_per_img == 20
    assert again.rpn.anchor_generator.sizes == ((16,), (32,), (64,), (128,))
    assert not hasattr(again.backbone.body, "layer4")  # the demo's three stages, recorded in the spec
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


NEW_MODELS = ("maskrcnn_v2", "fasterrcnn_v2", "fasterrcnn_mobilenet_v3")


def _targets(with_masks):
    boxes = torch.tensor([[5.0, 5.0, 40.0, 50.0]])
    target = dict(boxes=boxes, labels=torch.tensor([2]))
    if with_masks:
        target["masks"] = torch.zeros(1, H, W, dtype=torch.uint8)
        target["masks"][0, 5:50, 5:40] = 1
    return [target]


@pytest.mark.parametrize("name", NEW_MODELS)
def test_new_models_build_train_and_rebuild_from_their_checkpoint(name):
    """Random init for 3 classes: predictors sized 4, one training step, the same outputs rebuilt from the spec."""
    torch.manual_seed(0)
    classes = [dict(id=k, name=f"c{k}") for k in (1, 2, 3)]
    model, spec = tv_training.build_model(name, "none", classes, torch.device("cpu"), min_size=64, max_size=96)
    assert model.roi_heads.box_predictor.cls_score.out_features == 4
    assert model.roi_heads.box_predictor.bbox_pred.out_features == 16
    has_masks = name == "maskrcnn_v2"
    assert (model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 4) if has_masks else \
        not model.roi_heads.has_mask()
    model.train()
    losses = model([torch.rand(3, H, W)], _targets(has_masks))
    assert set(losses) == (MASK_LOSSES if has_masks else BOX_LOSSES)
    sum(losses.values()).backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01).step()
    model.eval()
    again, _ = tv_training.build_model(name, "none", classes, torch.device("cpu"),
                                       checkpoint=dict(model=model.state_dict(), model_spec=spec))
    image = [torch.rand(3, H, W)]
    with torch.inference_mode():
        a, b = model(image)[0], again.eval()(image)[0]
    assert spec["model"] == name and torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])


@pytest.mark.parametrize("name,layers", [("maskrcnn_v2", 2), ("fasterrcnn_mobilenet_v3", 4)])
def test_pretrained_layout_of_the_new_models_is_torchvisions(name, layers):
    """The layout a checkpoint from pretrained weights is rebuilt in (no download) has torchvision's
    trainable parameters and norm layers for --trainable-backbone-layers (v2: trainable BatchNorm)."""
    builder = {"maskrcnn_v2": torchvision.models.detection.maskrcnn_resnet50_fpn_v2,
               "fasterrcnn_mobilenet_v3": torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn}[name]
    # torchvision's own pretrained-backbone layout: a backbone "trained" means frozen stages, built offline by
    # passing a weights enum would download, so compare with the extractor's choice on a random backbone
    mine = build(name, "layout", trainable_backbone_layers=layers)
    plain = builder(weights=None, weights_backbone=None)
    trainable = {n for n, p in mine.backbone.body.named_parameters() if p.requires_grad}
    assert trainable and trainable < {n for n, _ in plain.backbone.body.named_parameters()}
    frozen = any(isinstance(m, FrozenBatchNorm2d) for m in mine.backbone.body.modules())
    assert frozen == (name == "fasterrcnn_mobilenet_v3")
    if name == "maskrcnn_v2":
        assert {n.split(".")[0] for n in trainable} == {"layer3", "layer4"}
    else:  # the last 4 of MobileNetV3's 6 stages
        blocks = list(mine.backbone.body.children())
        stages = [0] + [i for i, b in enumerate(blocks) if getattr(b, "_is_cn", False)] + [len(blocks) - 1]
        assert min(int(n.split(".")[0]) for n in trainable) == stages[len(stages) - layers]


def test_weight_enum_names_fit_their_model_or_are_one_line():
    assert pretrained.is_named_weights("MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1")
    assert pretrained.weights_file("MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1") is None
    assert pretrained.weights_error("maskrcnn_v2", "MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1") is None
    assert pretrained.weights_error("fasterrcnn", "ResNet50_Weights.IMAGENET1K_V2", "--weights-backbone") is None
    wrong = pretrained.weights_error("maskrcnn_v2", "MaskRCNN_ResNet50_FPN_Weights.COCO_V1")
    assert "\n" not in wrong and "MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1" in wrong
    bad = pretrained.weights_error("fasterrcnn_mobilenet_v3", "Nope_Weights.X", "--weights-backbone")
    assert "not a torchvision weight enum" in bad and "MobileNet_V3_Large_Weights.IMAGENET1K_V1" in bad
    assert "no separate backbone" in pretrained.weights_error("mobilenet", "DEFAULT", "--weights-backbone")


def test_backbone_weights_take_torchvisions_short_names_and_default():
    """--weights-backbone as torchvision's builders take it: DEFAULT (any case) or a member's short name
    become the full enum name (the offline error names its file); anything else is one usage line."""
    assert pretrained.backbone_enum_name("maskrcnn", "DEFAULT") == "ResNet50_Weights.IMAGENET1K_V2"
    assert pretrained.backbone_enum_name("maskrcnn", "default") == "ResNet50_Weights.IMAGENET1K_V2"
    assert pretrained.backbone_enum_name("fasterrcnn", "IMAGENET1K_V1") == "ResNet50_Weights.IMAGENET1K_V1"
    assert pretrained.backbone_enum_name("fasterrcnn_mobilenet_v3", "DEFAULT") == \
        "MobileNet_V3_Large_Weights.IMAGENET1K_V2"  # the enum's DEFAULT, as torchvision's verify() reads it
    assert pretrained.backbone_enum_name("maskrcnn", "none") is None
    for short in ("IMAGENET1K_V1", "DEFAULT"):
        assert pretrained.weights_error("maskrcnn", short, "--weights-backbone") is None
    assert "garbage is not a torchvision weight enum" in pretrained.weights_error("maskrcnn", "garbage",
                                                                                  "--weights-backbone")


def test_trainable_backbone_layers_range_and_models():
    assert pretrained.trainable_layers_error("fasterrcnn_mobilenet_v3", 6, "DEFAULT", None) is None
    assert "0 to 5" in pretrained.trainable_layers_error("maskrcnn_v2", 6, "DEFAULT", None)
    assert "no such setting" in pretrained.trainable_layers_error("maskrcnn_resnet18", 2, "DEFAULT", None)
    assert "random init" in pretrained.trainable_layers_error("fasterrcnn", 2, "none", None)
    assert pretrained.trainable_layers_error("fasterrcnn", 2, "none", "ResNet50_Weights.IMAGENET1K_V1") is None


def test_an_uncached_weight_enum_is_the_offline_error(monkeypatch):
    """Offline, an enum's file is named in the same one-line error as DEFAULT's."""
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(TutorialError, match=r"fasterrcnn_resnet50_fpn_v2_coco-dd69338a\.pth by hand") as e:
        build("fasterrcnn_v2", "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", NEW_MODELS)
def test_new_models_build_with_the_demos_settings(name):
    """--demo's small RPN/RoI settings; the v2 builders pass their own anchors, MobileNetV3-FPN has 3 levels."""
    model, spec = tv_training.build_model(name, "none", [dict(id=1, name="a")], torch.device("cpu"), min_size=64,
                                          max_size=96, demo_settings=True)
    assert spec["anchors"] is None and model.rpn._pre_nms_top_n["training"] == spec["kwargs"]["rpn_pre_nms_top_n_train"]


def test_a_checkpoint_records_trainable_backbone_layers_and_weight_enums():
    """A checkpoint fine-tuned from pretrained weights with --trainable-backbone-layers 1 is rebuilt (offline)
    with only ResNet's layer4 trainable, as it trained."""
    spec = specs.model_spec("fasterrcnn_v2", 3, "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1",
                            dict(TINY, trainable_backbone_layers=1))
    assert spec["pretrained_layout"]
    state = build("fasterrcnn_v2", "layout", num_classes=3, **TINY).state_dict()
    model = specs.build_model(tv_training.MODELS, spec, state)
    trainable = {n.split(".")[0] for n, p in model.backbone.body.named_parameters() if p.requires_grad}
    assert trainable == {"layer4"}
