"""Shared fixtures and constants (tests import the constants with ``from conftest import ...``)."""

import os

import pytest
import torch

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


def build(name="maskrcnn", weights=None, num_classes=2, **kwargs):
    """A stock model of tv_training.MODELS, offline: weights None (random init) or "layout"."""
    import model_weights
    import tv_training

    return model_weights.build_detector(tv_training.MODELS[name], name, num_classes, weights, **kwargs)


def make_data(root, num_images=4, seed=0, height_range=(64, 80), width_range=(48, 96)):
    """Tiny synthetic pedestrians in the Penn-Fudan layout; returns ``root``."""
    from synthetic_data import make_synthetic_pennfudan

    return make_synthetic_pennfudan(str(root), num_images=num_images, seed=seed, height_range=height_range,
                                    width_range=width_range)


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
