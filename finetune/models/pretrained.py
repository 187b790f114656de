"""Where a model's weights come from: ``--weights DEFAULT`` (torchvision's download, with an
error naming the file and the folder to put it in when offline), ``none`` (random init), the
pretrained layout rebuilt without a download, and a weights file read without running pickled code."""

import os

import torch
import torchvision

from finetune.errors import TutorialError

# What weights="DEFAULT" downloads for each model of tv_training.MODELS, and whether the
# pretrained model has a layout of its own (frozen BatchNorm, 3 trainable backbone stages).
PRETRAINED = {
    "maskrcnn": ("MaskRCNN_ResNet50_FPN_Weights", True),
    "fasterrcnn": ("FasterRCNN_ResNet50_FPN_Weights", True),
    "mobilenet": ("MobileNet_V2_Weights", False),  # an ImageNet backbone, trainable BatchNorm
    "maskrcnn_resnet18": ("ResNet18_Weights", False),  # likewise
    "maskrcnn_v2": ("MaskRCNN_ResNet50_FPN_V2_Weights", True),
    "fasterrcnn_v2": ("FasterRCNN_ResNet50_FPN_V2_Weights", True),
    "fasterrcnn_mobilenet_v3": ("FasterRCNN_MobileNet_V3_Large_FPN_Weights", True),
}
# --weights-backbone: the ImageNet weights each torchvision detector builder takes, and the most
# --trainable-backbone-layers it has (ResNet: conv1 + 4 stages; MobileNetV3: 6 stages).
BACKBONES = {"maskrcnn": ("ResNet50_Weights", 5), "fasterrcnn": ("ResNet50_Weights", 5),
             "maskrcnn_v2": ("ResNet50_Weights", 5), "fasterrcnn_v2": ("ResNet50_Weights", 5),
             "fasterrcnn_mobilenet_v3": ("MobileNet_V3_Large_Weights", 6)}
# The v2 recipe keeps BatchNorm trainable even with pretrained weights (torchvision's builders).
TRAINABLE_BN = ("maskrcnn_v2", "fasterrcnn_v2")


def is_weight_enum(weights):
    """Whether ``weights`` is a torchvision weight enum name, e.g. ``ResNet50_Weights.IMAGENET1K_V1``."""
    head, dot, _ = str(weights).partition(".")
    return bool(dot) and head.endswith("_Weights") and "/" not in str(weights) and "\\" not in str(weights)


def weights_error(model, weights, flag="--weights"):
    """One line saying why ``weights`` (``flag``'s value: an enum name) does not fit ``--model
    model``, naming the enum class it takes and its values; None when it fits (or is not an enum)."""
    if flag != "--weights" and model not in BACKBONES:
        return (f"argument {flag}: --model {model} takes no separate backbone weights (its --weights are the "
                f"backbone's); models that do: {', '.join(sorted(BACKBONES))}")
    expected = PRETRAINED[model][0] if flag == "--weights" else BACKBONES[model][0]
    if not is_weight_enum(weights):
        if flag == "--weights" or str(weights).upper() == "DEFAULT":
            return None  # --weights: DEFAULT, none or a file (looked for later)
        # torchvision's builders also take a member's short name (IMAGENET1K_V1); anything else is a KeyError there
        members = torchvision.models.get_weight(f"{expected}.DEFAULT").__class__.__members__
        if str(weights) in members:
            return None
    try:
        found = type(torchvision.models.get_weight(str(weights))).__name__
    except (KeyError, ValueError, AttributeError):
        found = None
    if found == expected:
        return None
    values = ", ".join(f"{expected}.{w.name}" for w in torchvision.models.get_weight(f"{expected}.DEFAULT").__class__)
    what = f"{weights} is not a torchvision weight enum" if found is None else f"{weights} are {found}'s weights"
    return f"argument {flag}: {what}; --model {model} takes {values}" + (" (or DEFAULT, none)" if flag == "--weights"
                                                                          else " (or DEFAULT)")


def backbone_enum_name(model, weights_backbone):
    """``--weights-backbone`` as a full enum name (``ResNet50_Weights.IMAGENET1K_V1``), where it was
    given as DEFAULT or a member's short name (``IMAGENET1K_V1``), as torchvision's builders take
    them; None for none (or None)."""
    if weights_backbone is None or is_random_init(weights_backbone):
        return None
    if is_weight_enum(weights_backbone) or model not in BACKBONES:
        return weights_backbone
    short = "DEFAULT" if str(weights_backbone).upper() == "DEFAULT" else str(weights_backbone)
    return f"{BACKBONES[model][0]}.{torchvision.models.get_weight(f'{BACKBONES[model][0]}.{short}').name}"


def trainable_layers_error(model, layers, weights, weights_backbone):
    """One line for ``--trainable-backbone-layers`` that does not fit (None when it does): out of
    range, a model without a torchvision backbone builder, or random init (every layer trains)."""
    if layers is None:
        return None
    if model not in BACKBONES:
        return (f"argument --trainable-backbone-layers: --model {model} has no such setting (every layer of its "
                f"backbone trains); models that do: {', '.join(sorted(BACKBONES))}")
    most = BACKBONES[model][1]
    if not 0 <= layers <= most:
        return f"argument --trainable-backbone-layers: {layers} is out of range for --model {model}: 0 to {most}"
    if is_random_init(weights) and weights_backbone is None:
        return ("argument --trainable-backbone-layers: with --weights none (and no --weights-backbone) every "
                "layer trains from random init; give pretrained weights or drop the flag")
    return None


def is_random_init(weights):
    """Whether ``--weights`` asks for random init: "none" (or "None", or Python's None)."""
    return str(weights) in ("none", "None")


def is_named_weights(weights):
    """Whether ``--weights`` names weights, "DEFAULT" or a torchvision enum name (pretrained,
    downloaded) or "none" (random init), rather than a file to read."""
    return str(weights) == "DEFAULT" or is_random_init(weights) or is_weight_enum(weights)


def weights_file(weights, resume=None):
    """The file a run reads its model from: ``resume`` (``--resume``), else ``weights`` when it
    names a file (not DEFAULT or none); None when there is none."""
    return resume or (None if is_named_weights(weights) else weights)


def _freeze_bn(module):
    for name, child in module.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            setattr(module, name, torchvision.ops.FrozenBatchNorm2d(child.num_features, eps=child.eps))
        else:
            _freeze_bn(child)


def _trainable_prefixes(body, trainable_layers):
    """The names of ``body``'s modules that train with ``trainable_layers`` stages trainable, as
    torchvision's ResNet and MobileNetV3 FPN extractors choose them."""
    if hasattr(body, "layer1"):
        return ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    blocks = list(body.children())  # MobileNetV3: stages start at the blocks marked _is_cn
    stages = [0] + [i for i, b in enumerate(blocks) if getattr(b, "_is_cn", False)] + [len(blocks) - 1]
    first = len(blocks) if trainable_layers == 0 else stages[len(stages) - trainable_layers]
    return [f"{i}." for i in range(first, len(blocks))]


def pretrained_layout(model, trainable_layers=3, frozen_bn=True):
    """Give a randomly built FPN model the layout of the pretrained one, without downloading.

    Pretrained builders use FrozenBatchNorm2d (not the v2 models: ``frozen_bn=False``) and train
    only the last ``trainable_layers`` backbone stages; random init (``weights_backbone=None``)
    uses trainable BatchNorm and trains all. A checkpoint fine-tuned from the pretrained weights
    must be loaded back into the same layout.
    """
    body = model.backbone.body
    if frozen_bn:
        _freeze_bn(body)
    trainable = _trainable_prefixes(body, trainable_layers)
    for name, p in body.named_parameters():
        p.requires_grad_(any(name.startswith(layer) for layer in trainable))
    return model


def pretrained_url(name, weights="DEFAULT"):
    """The download address of model ``name``'s ``weights`` (DEFAULT or an enum name)."""
    enum_name, _ = PRETRAINED[name]
    return torchvision.models.get_weight(str(weights) if is_weight_enum(weights) else f"{enum_name}.DEFAULT").url


def build_detector(model_fn, name, num_classes, weights, **kwargs):
    """``model_fn(num_classes, weights=..., **kwargs)`` with ``weights`` = "DEFAULT", an enum name, None or "layout".

    "DEFAULT" (or an enum: ``kwargs``' ``weights_backbone`` too) downloads; a download that fails
    raises a ``TutorialError`` naming the file to fetch and where to put it. None is a real random
    init (``weights_backbone=None`` too: no ImageNet backbone download behind the caller's back;
    trainable BatchNorm, every backbone stage trains); "layout" is the pretrained configuration
    with random values, to load a checkpoint fine-tuned from the pretrained weights. ``name`` is
    the model's key in ``PRETRAINED``.
    """
    _, has_layout = PRETRAINED[name]
    if weights == "layout" or (weights is None and not kwargs.get("weights_backbone")):
        layers = kwargs.pop("trainable_backbone_layers", None)  # random init: torchvision trains them all
        if has_layout:  # no ImageNet backbone download behind the caller's back
            kwargs["weights_backbone"] = None
        model = model_fn(num_classes, weights=None, **kwargs)
        if weights == "layout" and has_layout:
            return pretrained_layout(model, 3 if layers is None else layers, name not in TRAINABLE_BN)
        return model
    try:
        return model_fn(num_classes, weights=weights, **kwargs)
    except (OSError, RuntimeError) as e:  # no network (URLError), or a download/cache failing its hash
        url = pretrained_url(name, weights)
        backbone = kwargs.get("weights_backbone")
        if is_random_init(weights) and backbone:
            url = torchvision.models.get_weight(str(backbone)).url
        cache = os.path.join(torch.hub.get_dir(), "checkpoints")
        raise TutorialError(
            f"cannot get pretrained weights {url} ({str(e).splitlines()[0][:160]}). Download "
            f"{os.path.basename(url)} by hand into {cache}/ (delete a corrupt copy there first), "
            f"or train from random init with --weights none (or run --demo)."
        ) from None


def load_weights_file(path):
    """A checkpoint of ours or a plain state dict, loaded without running pickled code.

    Anything else is a ``TutorialError`` saying what the file is (an image, a pickle with code,
    a truncated file, another object) and what to pass instead.
    """
    fix = "Pass a checkpoint written by training (e.g. output/checkpoint.pth), or --weights DEFAULT or none."
    if os.path.isdir(path):
        inside = os.path.join(path, "checkpoint.pth")
        raise TutorialError(f"{path}: a folder, not a weights file. Pass the checkpoint file in it" +
                            (f", e.g. {inside}." if os.path.isfile(inside) else f". {fix}"))
    if not os.path.isfile(path):
        raise TutorialError(f"{path}: no such weights file. {fix}")
    with open(path, "rb") as f:
        head = f.read(8)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # an image, a damaged file, a pickle that weights_only refuses
        raise TutorialError(f"{path}: {_not_a_checkpoint(head, e)} {fix}") from None
    state = ckpt.get("model") if isinstance(ckpt, dict) and "model" in ckpt else ckpt
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TutorialError(f"{path}: holds a {type(state).__name__}, not a model's state dict. {fix}")
    return ckpt if state is not ckpt else {"model": ckpt}


def _not_a_checkpoint(head, error):
    """What a file that torch.load(weights_only=True) refused is, in words."""
    text = str(error)
    kinds = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image", b"{": "a JSON file",
             b"%PDF": "a PDF document"}
    for magic, kind in kinds.items():
        if head.startswith(magic):
            return f"{kind}, not a checkpoint."
    if "weights_only" in text or "Unsupported global" in text:
        found = next((line.strip() for line in text.splitlines() if "Unsupported global" in line), "")
        return (f"a pickle that would run code when loaded{' (' + found + ')' if found else ''}, which "
                f"weights_only loading refuses. If you trust it, load it yourself and re-save "
                f"torch.save(model.state_dict(), path).")
    if isinstance(error, EOFError) or "truncated" in text or "central directory" in text or "zip archive" in text:
        return "a truncated or damaged file (an interrupted copy or download?)."
    return f"not a PyTorch checkpoint ({text.splitlines()[0][:120] if text else type(error).__name__})."
