"""Weights for a run: pretrained downloads that fail clearly offline, random init, checkpoints.

The tutorial's model builders (tv_training.py) take ``weights`` and return stock torchvision
models. ``build_model`` wraps them where a run builds its model:

* ``weights="DEFAULT"`` downloads; without a network the error names the file and the cache
  folder to put it in (``TutorialError``), instead of a urllib traceback;
* ``weights=None`` is a real random init: ``weights_backbone=None`` too (torchvision would
  otherwise download ImageNet backbone weights), which also means trainable BatchNorm and
  all 5 ResNet stages trainable;
* ``"layout"`` builds the pretrained configuration (frozen BatchNorm, 3 trainable stages)
  with random values, to load a checkpoint fine-tuned from the pretrained weights.

A checkpoint carries a ``model_spec`` (model name, classes, constructor settings), so it can
be rebuilt for ``--predict``/``--test-only`` without retyping the flags that shaped it.
"""


import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator

from finetune.data.pennfudan import PENNFUDAN_CLASSES
from finetune.errors import TutorialError
from finetune.models import small_maskrcnn
from finetune.models.pretrained import PRETRAINED, build_detector
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
                pretrained_layout=str(weights) == "DEFAULT" and PRETRAINED[name][1])


def checkpoint_spec(checkpoint, model=None, kwargs=None, anchors=None, classes=None):
    """The ``model_spec`` a checkpoint was written with. Older checkpoints derive it from the
    arguments stored beside the weights; a plain state dict (no arguments) is taken as ``model``
    (default maskrcnn) built with ``kwargs``/``anchors``, with the number of classes and the
    BatchNorm layout read from its tensors (``classes``, the data's, must be as many)."""
    if "model_spec" in checkpoint:
        return dict(checkpoint["model_spec"], classes=checkpoint["model_spec"].get("classes") or
                    PENNFUDAN_CLASSES)
    trained = checkpoint.get("args", {})
    if not trained:  # a plain state dict: what the caller was asked for, sized by the tensors
        state = checkpoint["model"]
        name = model or "maskrcnn"
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
        return model_spec(name, num_classes, "DEFAULT" if frozen else "none", kwargs, anchors, classes)
    name = trained.get("model", "maskrcnn")
    kwargs = dict(min_size=trained.get("min_size", 800), max_size=trained.get("max_size", 1333))
    anchors = None
    if trained.get("demo"):
        kwargs.update(small_maskrcnn.DEMO_MODEL_KWARGS)
        anchors = small_maskrcnn.DEMO_ANCHORS
    return model_spec(name, 2, str(trained.get("weights", "DEFAULT")), kwargs, anchors)


def build_model(models, spec, weights=None):
    """The model ``spec`` describes, from ``models[spec["model"]]``.

    ``weights``: "DEFAULT" (download), None (random init), or a state dict to load into the
    layout the spec records (the tensors must fit: an error names the model otherwise).
    """

    name = spec["model"]
    kwargs = dict(spec["kwargs"])
    if spec.get("anchors"):
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
    """This project's speed-ups (speedups.py; same results), then ``model`` on ``device``, in
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
