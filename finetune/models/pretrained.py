"""Where a model's weights come from: ``--weights DEFAULT`` (torchvision's download, with an
error naming the file and the folder to put it in when offline), ``none`` (random init), the
pretrained layout rebuilt without a download, and a weights file read without running pickled code."""

import os

import torch
import torchvision

from finetune.errors import TutorialError

# What weights="DEFAULT" downloads for each model of tv_training.MODELS, and whether the
# pretrained model has a layout of its own (frozen BatchNorm, 3 trainable ResNet stages).
PRETRAINED = {
    "maskrcnn": ("MaskRCNN_ResNet50_FPN_Weights", True),
    "fasterrcnn": ("FasterRCNN_ResNet50_FPN_Weights", True),
    "mobilenet": ("MobileNet_V2_Weights", False),  # an ImageNet backbone, trainable BatchNorm
    "maskrcnn_resnet18": ("ResNet18_Weights", False),  # likewise
}


def is_random_init(weights):
    """Whether ``--weights`` asks for random init: "none" (or "None", or Python's None)."""
    return str(weights) in ("none", "None")


def is_named_weights(weights):
    """Whether ``--weights`` names weights, "DEFAULT" (pretrained, downloaded) or "none" (random
    init), rather than a file to read."""
    return str(weights) == "DEFAULT" or is_random_init(weights)


def weights_file(weights, resume=None):
    """The file a run reads its model from: ``resume`` (``--resume``), else ``weights`` when it
    names a file (not DEFAULT or none); None when there is none."""
    return resume or (None if is_named_weights(weights) else weights)


def pretrained_layout(model, trainable_layers=3):
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


def pretrained_url(name):
    """The download address of model ``name``'s DEFAULT weights."""
    enum_name, _ = PRETRAINED[name]
    return torchvision.models.get_weight(f"{enum_name}.DEFAULT").url


def build_detector(model_fn, name, num_classes, weights, **kwargs):
    """``model_fn(num_classes, weights=..., **kwargs)`` with ``weights`` = "DEFAULT", None or "layout".

    "DEFAULT" downloads; a download that fails raises a ``TutorialError`` naming the file to fetch
    and where to put it. None is a real random init (``weights_backbone=None`` too: no ImageNet
    backbone download behind the caller's back; trainable BatchNorm, all 5 ResNet stages train);
    "layout" is the pretrained configuration with random values, to load a checkpoint fine-tuned
    from the pretrained weights. ``name`` is the model's key in ``PRETRAINED``.
    """
    _, has_layout = PRETRAINED[name]
    if weights in (None, "layout"):
        if has_layout:  # no ImageNet backbone download behind the caller's back
            kwargs["weights_backbone"] = None
        model = model_fn(num_classes, weights=None, **kwargs)
        return pretrained_layout(model) if weights == "layout" and has_layout else model
    try:
        return model_fn(num_classes, weights=weights, **kwargs)
    except (OSError, RuntimeError) as e:  # no network (URLError), or a download/cache failing its hash
        url = pretrained_url(name)
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
