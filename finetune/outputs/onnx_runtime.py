"""Prediction through ONNX Runtime: ``OnnxPredictor`` runs a file written by ``--export``
(``finetune.outputs.onnx_export``) and answers like the PyTorch model, so
``finetune.outputs.prediction.predict`` writes the same files for both; ``predict_command`` is

    python tv_training.py --predict photos/ --weights model.onnx

onnx and onnxruntime are imported inside the functions that need them (``require``): the rest of
the project runs without them.
"""

import importlib
import json
import os

import torch

import utils
from finetune.data.masks import mask_to_rle
from finetune.errors import TutorialError
from finetune.models import specs
from finetune.outputs import prediction, writing

OUTPUT_MEANING = {
    "boxes": "float32 (N, 4): x0, y0, x1, y1 in the input image's pixels",
    "labels": "int64 (N): class k is classes[k - 1] (0, the background, never appears)",
    "scores": "float32 (N): confidence, sorted from highest",
    "masks": "float32 (N, 1, H, W): per-pixel probability at the input's size; the object is mask > 0.5",
}


def require(package, purpose):
    """``import package``, or one line saying what to install (onnx and onnxruntime are optional)."""
    try:
        return importlib.import_module(package)
    except ImportError:
        raise TutorialError(f"{purpose} needs the {package} package, which is not installed here: "
                            f"pip install {package} (or pip install -r requirements.txt).") from None


def is_onnx_model(path):
    """Whether ``--weights`` names an ONNX model (by its extension)."""
    return isinstance(path, str) and path.lower().endswith(".onnx")


def sidecar_path(onnx_path):
    """The JSON written beside ``model.onnx``: ``model.json``."""
    return os.path.splitext(onnx_path)[0] + ".json"


class OnnxPredictor:
    """An exported detector run by ONNX Runtime, answering like the PyTorch model:
    ``predictor([image])`` -> ``[{"boxes", "labels", "scores", "masks"}]`` (tensors).

    ``mask_min_score``: None gives full (N, 1, H, W) ``masks`` as torchvision does; a number gives
    ``masks_rle`` instead (COCO RLE of mask > 0.5, None below that score), as
    ``finetune.speedups.mask_paste.compact_masks`` makes the PyTorch model do for ``prediction.predict``.
    ``threads``: ONNX Runtime's intra-op threads (None: its default, one per physical core).
    ``mask_band`` (with ``mask_min_score``): also ``masks_near_threshold``, RLEs of the pixels whose
    probability is within this much of 0.5, which float rounding may put on either side.
    """

    mask_band = None

    def __init__(self, path, mask_min_score=None, threads=None):
        ort = require("onnxruntime", f"--weights {path}")
        if not os.path.isfile(path):
            raise TutorialError(f"--weights {path}: no such ONNX model. Write one with --export {path} "
                                f"--weights CHECKPOINT.")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own classes (InvalidProtobuf, Fail, ...)
            first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            raise TutorialError(f"--weights {path}: not a readable ONNX model ({first}). Export it again with "
                                f"--export {path} --weights CHECKPOINT --overwrite.") from None
        inputs, names = self.session.get_inputs(), [o.name for o in self.session.get_outputs()]
        if len(inputs) != 1 or len(inputs[0].shape) != 3 or inputs[0].type != "tensor(float)" or \
                not {"boxes", "labels", "scores"} <= set(names):
            raise TutorialError(f"--weights {path}: an ONNX model, but not a detector exported by --export (inputs "
                                f"{[(i.name, i.type) for i in inputs]}, outputs {names}).")
        self.input_name, self.output_names = inputs[0].name, names
        self.mask_min_score = mask_min_score
        self.metadata = self.session.get_modelmeta().custom_metadata_map

    def eval(self):
        return self  # prediction.predict calls model.eval()

    def __call__(self, images):
        results = []
        for image in images:
            array = image.detach().to("cpu", torch.float32).contiguous().numpy()
            try:
                values = dict(zip(self.output_names, self.session.run(None, {self.input_name: array})))
            except Exception as e:  # onnxruntime's own classes (Fail, InvalidArgument): as PyTorch's, per image
                text = str(e).splitlines()[0] if str(e) else type(e).__name__
                text = text.split("Status Message:")[-1].strip()  # the cause, after the node's long name
                memory = "out of memory: " if "allocate memory" in str(e) else ""
                raise RuntimeError(f"{memory}ONNX Runtime: {text[:200]}") from None
            pred = {k: torch.from_numpy(v) for k, v in values.items()}
            if "masks" in pred and self.mask_min_score is not None:
                masks, keep = pred.pop("masks"), pred["scores"] >= self.mask_min_score
                pred["masks_rle"] = masks_as_rles(masks, keep)
                if self.mask_band is not None:
                    pred["masks_near_threshold"] = masks_as_rles((masks - 0.5).abs() < self.mask_band, keep,
                                                                 threshold=None)
            results.append(pred)
        return results


def masks_as_rles(masks, keep, threshold=0.5):
    """COCO RLEs (``counts`` as str) of ``masks[i, 0] > threshold`` where ``keep[i]``, None elsewhere
    (``threshold`` None: ``masks`` are boolean already)."""

    rles = []
    for mask, k in zip(masks, keep.tolist()):
        if not k:
            rles.append(None)
            continue
        rles.append(mask_to_rle(mask[0] if threshold is None else mask[0] > threshold))
    return rles


def read_classes(onnx_path, metadata=None):
    """The classes of an exported model: from its .json, else from the ONNX file's metadata.
    Returns ``(classes, model name)``; raises ``TutorialError`` for a damaged .json."""
    def parsed(text, where, fix):
        try:
            info = json.loads(text)
            info["classes"] = [dict(id=int(c["id"]), name=str(c["name"])) for c in info["classes"]]
            if not info["classes"]:
                raise ValueError("no classes")
            return info
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise TutorialError(f"{where}: not what --export writes ({type(e).__name__}: {str(e)[:80]}). "
                                f"{fix}") from None

    side = sidecar_path(onnx_path)
    stored = parsed(metadata["detector"], f"{onnx_path} (its \"detector\" metadata)",
                    "Export it again with --overwrite.") if metadata and "detector" in metadata else None
    if not os.path.isfile(side):
        return (stored["classes"], stored.get("model")) if stored else (None, None)
    try:
        with open(side, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise TutorialError(f"{side}: cannot read it ({e}). Delete it to use the classes stored in the .onnx.") \
            from None
    info = parsed(text, side, "Export again with --overwrite, or delete it to use the classes stored in the .onnx.")
    if stored and (info["classes"] != stored["classes"] or info.get("model") != stored.get("model")):
        raise TutorialError(f"{side}: names the classes {[c['name'] for c in info['classes']]} ({info.get('model')}), "
                            f"but {onnx_path} was exported with {[c['name'] for c in stored['classes']]} "
                            f"({stored.get('model')}): it belongs to another export. Delete it (the .onnx's own are "
                            f"then used) or export again with --overwrite.")
    return info["classes"], info.get("model")


def stored_min_score(metadata):
    """The lowest score an exported graph keeps, from its "detector" metadata (None: not recorded,
    as in files exported before it was)."""
    try:
        value = json.loads(metadata["detector"]).get("min_score")
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def predict_command(weights, images, output_dir=None, score_threshold=0.5, overwrite=False, typed_model=None,
                    device="auto", eval_bf16=False):
    """``--predict IMAGES --weights FILE.onnx``: prediction.predict of ``images`` (files or folders)
    through ONNX Runtime (CPU) into ``output_dir/predict`` (None: ``./predict``).

    ``typed_model``: ``--model`` if the user typed it, else None. ``device`` and ``eval_bf16`` (the
    PyTorch options) only get a line saying they do not apply. Under torchrun only rank 0 predicts;
    the others return ``{"predictions": []}`` at once, as the eager ``--predict`` does.
    """

    if not utils.is_main_process():
        return {"predictions": []}
    predictor = OnnxPredictor(weights, mask_min_score=score_threshold)
    classes, model_name = read_classes(weights, predictor.metadata)
    if model_name:
        specs.check_model_flag(typed_model, model_name, weights)
    predict_dir = os.path.join(output_dir or ".", "predict")  # checked (and made) once the model is known good
    writing.check_output_dir(predict_dir)
    prediction.check_earlier_predictions(predict_dir, overwrite)
    if classes is None:
        print(f"warning: {weights}: neither {sidecar_path(weights)} nor the file names the classes; "
              f"labels are printed as numbers.")
        classes = [dict(id=k, name=str(k)) for k in range(1, 100)]
    if device not in ("auto", "cpu"):
        print(f"--device {device}: an .onnx model runs on the CPU here (ONNX Runtime's CPU provider).")
    if eval_bf16:
        print("--eval-bf16 applies to PyTorch models; the .onnx model runs in float32.")
    floor = stored_min_score(predictor.metadata)
    if floor is not None and score_threshold < floor:
        print(f"note: {weights} keeps detections scoring at least {floor:g} (fixed when it was exported); "
              f"--score-threshold {score_threshold:g} finds none below that. A checkpoint (--weights CHECKPOINT) "
              f"goes lower.")
    return prediction.predict(predictor, images, torch.device("cpu"), predict_dir, score_threshold, classes,
                           overwrite=overwrite)
