"""A model as a checkpoint describes it: ``model_spec`` (model name, classes, constructor
settings, layout), the model rebuilt from one, and the speed-ups and device it then runs with."""


import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator

from finetune.data.pennfudan import PENNFUDAN_CLASSES
from finetune.errors import TutorialError
from finetune.models.pretrained import PRETRAINED, build_detector, is_weight_enum
from finetune.speedups import fast_layers, inference


def model_spec(name, num_classes, weights, kwargs=None, anchors=None, classes=None):
    """What shapes a model, as plain values a checkpoint can hold (``weights_only`` loads them).

    ``kwargs`` go to the builder (sizes, RPN/RoI settings); ``anchors`` is
    ``dict(sizes=..., aspect_ratios=...)`` for an ``AnchorGenerator``, or None for the model's own;
    ``classes`` names label k + 1 (``[{"id": the dataset's category id, "name": ...}]``).
    """
    classes = classes or PENNFUDAN_CLASSES
    return dict(model=name, num_classes=num_classes, classes=[dict(c) for c in classes], kwargs=dict(kwargs or {}),
                anchors=None if anchors is None else {k: [list(v) for v in anchors[k]] for k in anchors},
                pretrained_layout=PRETRAINED[name][1] and (str(weights) == "DEFAULT" or is_weight_enum(weights) or
                                                           bool((kwargs or {}).get("weights_backbone"))))


def checkpoint_spec(checkpoint, model=None, kwargs=None, anchors=None, classes=None):
    """The ``model_spec`` a checkpoint of ours was written with. A plain state dict (no spec) is
    taken as ``model`` (default maskrcnn) built with ``kwargs``/``anchors``, with the number of
    classes and the BatchNorm layout read from its tensors (``classes``, the data's, must be as many)."""
    if "model_spec" in checkpoint:
        return dict(checkpoint["model_spec"])
    state = checkpoint["model"]
    scores = state.get("roi_heads.box_predictor.cls_score.weight")
    num_classes = int(scores.shape[0]) if scores is not None else 2
    if classes and len(classes) + 1 != num_classes:
        raise TutorialError(f"the weights have {num_classes - 1} class(es) (their box predictor has {num_classes} "
                            f"outputs, the background included), but the data has {len(classes)}: "
                            f"{', '.join(c['name'] for c in classes)}. Use weights trained on these classes.")
    if not classes:
        classes = PENNFUDAN_CLASSES if num_classes == 2 else \
            [dict(id=k, name=f"class {k}") for k in range(1, num_classes)]
    # trainable BatchNorm counts its batches; the pretrained layout's frozen one does not
    frozen = not any(k.startswith("backbone.body.") and k.endswith("num_batches_tracked") for k in state)
    return model_spec(model or "maskrcnn", num_classes, "DEFAULT" if frozen else "none", kwargs, anchors, classes)


def build_model(models, spec, weights=None):
    """The model ``spec`` describes, from ``models[spec["model"]]``.

    ``weights``: "DEFAULT" (download), None (random init), or a state dict to load into the
    layout the spec records (the tensors must fit: an error names the model otherwise).
    """
    name = spec["model"]
    kwargs = dict(spec["kwargs"])
    if spec["anchors"]:
        anchors = spec["anchors"]
        kwargs["rpn_anchor_generator"] = AnchorGenerator(tuple(map(tuple, anchors["sizes"])),
                                                         tuple(map(tuple, anchors["aspect_ratios"])))
    state_dict = weights if isinstance(weights, dict) else None
    if state_dict is not None:
        weights = "layout" if spec["pretrained_layout"] else None
    model = build_detector(models[name], name, spec["num_classes"], weights, **kwargs)
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as e:  # the first line only names the model class: show the first mismatch
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            detail = lines[1] if len(lines) > 1 else lines[0] if lines else type(e).__name__
            raise TutorialError(f"the weights do not fit --model {name} ({detail[:240]}). Pass the --model the "
                                f"weights were trained as (with --demo for the demo's model).") from None
    return model


def prepare_for_device(model, device, channels_last="auto"):
    """This project's speed-ups (``fast_layers.speed_up_model``; same results), then ``model`` on ``device``, in
    channels_last memory format where ``channels_last`` ("auto": on CPU) asks for it."""
    fast_layers.speed_up_model(model)
    model.to(device)
    if inference.use_channels_last(device, channels_last):
        model.to(memory_format=torch.channels_last)  # oneDNN's CPU convolutions are faster in NHWC
    return model


def check_model_flag(typed_model, trained_model, path):
    """``--model`` as typed (None: not typed) against the model the checkpoint or .onnx file
    ``path`` holds: another model is an error naming both."""
    if typed_model is not None and typed_model != trained_model:
        raise TutorialError(f"--model {typed_model} contradicts {path}, which holds a {trained_model} model. "
                            f"Drop --model: the checkpoint says which model it is.")
