"""Shared fixtures, constants and helpers (tests import the constants and helpers with
``from conftest import ...``)."""

import contextlib
import io
import json
import os

import pytest
import torch

import tv_training
from finetune.data.synthetic import make_synthetic_pennfudan
from finetune.models import pretrained

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Mask R-CNN settings small enough for 64-96 px images and a few seconds per test.
TINY = dict(min_size=64, max_size=96, rpn_pre_nms_top_n_train=50, rpn_post_nms_top_n_train=20,
            rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20, box_batch_size_per_image=16,
            box_detections_per_img=10)
# The loss terms of Mask R-CNN's training forward, and of the box-only models.
MASK_LOSSES = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
BOX_LOSSES = MASK_LOSSES - {"loss_mask"}
# What train_one_epoch logs: the terms and their sum.
LOSS_TERMS = MASK_LOSSES | {"loss"}


def pytest_configure(config):
    """Under pytest-xdist (pytest.ini's ``-n auto``) the workers share the machine's cores: each
    worker's torch, and the processes its tests start (OMP_NUM_THREADS, unless already set), get
    their share of intra-op threads, since threads that outnumber the cores spin against each
    other and the suite runs slower than with one worker."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        share = max(1, len(os.sched_getaffinity(0)) // int(workers))
        os.environ.setdefault("OMP_NUM_THREADS", str(share))
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def build(name="maskrcnn", weights=None, num_classes=2, **kwargs):
    """A stock model of tv_training.MODELS, offline: weights None (random init) or "layout"."""

    return pretrained.build_detector(tv_training.MODELS[name], name, num_classes, weights, **kwargs)


def make_data(root, num_images=4, seed=0, height_range=(64, 80), width_range=(48, 96)):
    """Tiny synthetic pedestrians in the Penn-Fudan layout; returns ``root``."""

    return make_synthetic_pennfudan(str(root), num_images=num_images, seed=seed, height_range=height_range,
                                    width_range=width_range)


def tiny_argv(data, out, *extra, epochs=1, weights=None, lr=None):
    """The command line of a tiny ``--demo`` run on ``data`` (64-96 px, batches of 2, no loader
    workers, 2 test images, a log line per iteration); ``extra`` comes last, so its flags win.
    ``weights`` and ``lr`` add --weights and --lr."""
    argv = ["--demo", "--data-path", data, "--output-dir", out]
    if weights is not None:
        argv += ["--weights", weights]
    argv += ["--min-size", "64", "--max-size", "96", "--epochs", str(epochs), "-b", "2", "-j", "0", "--test-size", "2",
             "--print-freq", "1"]
    if lr is not None:
        argv += ["--lr", lr]
    return argv + list(extra)


def run_main(*argv, quiet=False):
    """``tv_training.main`` on a command line, in this process (``quiet``: what it prints is dropped)."""

    args = tv_training.get_args_parser().parse_args(list(argv))
    if not quiet:
        return tv_training.main(args)
    with contextlib.redirect_stdout(io.StringIO()):
        return tv_training.main(args)


def predicted_detections(output_dir):
    """``--predict``'s results.json in ``output_dir``/predict, per image id: boxes (x1, y1, x2, y2),
    scores, labels and masks_rle, as ``onnx_export.compare_predictions`` takes them."""

    with open(os.path.join(output_dir, "predict", "results.json")) as f:
        results = json.load(f)
    by_image = {}
    for d in results:
        by_image.setdefault(d["image_id"], []).append(d)
    return {image_id: dict(
        boxes=torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in ds)]).reshape(-1, 4),
        scores=torch.tensor([d["score"] for d in ds]), labels=torch.tensor([d["category_id"] for d in ds]),
        masks_rle=[d["segmentation"] for d in ds]) for image_id, ds in by_image.items()}


def check_per_class(result):
    """A run's per-class AP table against its COCO numbers: COCO's AP (and AP50) is the mean of the
    classes' values over the classes with ground truth (-1: none), so the table must average to it."""
    for key, iou, stat in (("bbox", "bbox", "AP"), ("bbox50", "bbox", "AP50"), ("segm", "segm", "AP")):
        if iou in result:
            values = [row[key] for row in result["per_class"].values() if row[key] != -1]
            assert values and sum(values) / len(values) == pytest.approx(result[iou][stat], abs=1e-9), (key, result)


@pytest.fixture(scope="module")
def data(request, tmp_path_factory):
    """Six tiny synthetic images for a module's runs, made once per module; the seed is the
    module's ``DATA_SEED`` (default 3)."""
    seed = getattr(request.module, "DATA_SEED", 3)
    return make_data(tmp_path_factory.mktemp("data") / "SynthPed", num_images=6, seed=seed)


@pytest.fixture(scope="module")
def one_thread():
    """On 2 shared cores, 2 intra-op threads spin against the other processes of a test and run much slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Four tiny synthetic images in a folder named like the real dataset."""
    return make_data(tmp_path_factory.mktemp("pennfudan") / "PennFudanPed")
