"""The CUDA path: training and evaluation of every model (fp32 and --amp), the speed-ups against
stock torchvision, checkpoints between CUDA and the CPU, --predict, the report, --export of a
CUDA-trained checkpoint checked against --predict on CUDA, torchrun with NCCL.

Marked ``cuda`` and skipped where ``torch.cuda.is_available()`` is False (CI). On a GPU machine:
``python -m pytest -m cuda`` (``benchmarks/gpu_check.sh`` runs it). ``CUDA_TESTS_DEVICE=cpu``
runs the same tests on the CPU, to check the tests themselves on a machine without a GPU.
"""

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import MASK_LOSSES, ROOT_DIR, TINY, build, predicted_detections, run_main, tiny_argv
from pycocotools import mask as coco_mask
from torchvision.models.detection.roi_heads import paste_masks_in_image as torchvision_paste

import engine
import tv_training
import utils
from finetune.models import specs
from finetune.outputs import onnx_export, onnx_runtime
from finetune.run import optim
from finetune.speedups import fast_layers, mask_paste

DEVICE = os.environ.get("CUDA_TESTS_DEVICE", "cuda")
ON_CUDA = DEVICE.startswith("cuda")

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(),
                       reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]


@pytest.fixture(autouse=True)
def exact_float32():
    """TF32 off: the comparisons below are between float32 results."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


DATA_SEED = 5  # the images of the conftest ``data`` fixture


def loaders(data):
    dataset = tv_training.PennFudanDataset(data, tv_training.get_transform(train=True))
    test = tv_training.PennFudanDataset(data, tv_training.get_transform(train=False))
    train = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, [0, 1, 2, 3]), batch_size=2,
                                        collate_fn=utils.collate_fn, pin_memory=ON_CUDA)
    evaluation = torch.utils.data.DataLoader(torch.utils.data.Subset(test, [4, 5]), batch_size=1,
                                             collate_fn=utils.collate_fn, pin_memory=ON_CUDA)
    return train, evaluation


@pytest.mark.parametrize("amp", [None, torch.float16, torch.bfloat16], ids=["fp32", "float16", "bfloat16"])
@pytest.mark.parametrize("name", ["maskrcnn", "fasterrcnn", "mobilenet", "maskrcnn_resnet18", "maskrcnn_v2",
                                  "fasterrcnn_v2", "fasterrcnn_mobilenet_v3"])
def test_train_and_evaluate_each_model(name, amp, data, capsys):
    """Every --model trains (float32, and --amp in each --amp-dtype: float16 with a GradScaler that
    scales, bfloat16 with a disabled one) and evaluates, sync-free paths on (speed_up_model's default)."""
    if amp is torch.bfloat16 and ON_CUDA and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("this GPU has no native bfloat16")
    torch.manual_seed(0)
    device = torch.device(DEVICE)
    model = mask_paste.compact_masks(specs.prepare_for_device(build(name, None, **TINY), device))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    scaler = optim.make_grad_scaler(device, amp is not None, amp)
    assert scaler is None or scaler.is_enabled() is (amp is torch.float16)
    train, evaluation = loaders(data)
    history = []
    engine.train_one_epoch(model, optimizer, train, device, 0, print_freq=1, scaler=scaler, loss_history=history,
                           amp_dtype=amp)
    log = capsys.readouterr().out
    assert len(history) == 2 and all(np.isfinite(r["loss"]) for r in history)
    assert set(history[0]) - {"loss", "epoch", "iteration"} == (MASK_LOSSES if "mask" in name else
                                                                 MASK_LOSSES - {"loss_mask"})
    if ON_CUDA:
        assert "max mem: " in log  # MetricLogger reports the GPU's peak memory
    evaluator = engine.evaluate(model, evaluation, device)
    for iou in ("bbox", "segm") if "mask" in name else ("bbox",):
        assert len(evaluator.coco_eval[iou].stats) == 12


def test_speedups_give_stock_outputs(data):
    """Stated tolerance: folding frozen BatchNorm into the convolutions changes float rounding."""
    torch.manual_seed(0)
    device = torch.device(DEVICE)
    layout = build("maskrcnn", "layout", **TINY)
    reference = fast_layers.as_reference_model(copy.deepcopy(layout)).to(device).eval()
    ours = specs.prepare_for_device(copy.deepcopy(layout), device).eval()
    dataset = tv_training.PennFudanDataset(data, tv_training.get_transform(train=False))
    with torch.inference_mode():
        for idx in range(3):
            image = dataset[idx][0].to(device)
            want, got = reference([image])[0], ours([image])[0]
            assert torch.equal(got["labels"], want["labels"])
            torch.testing.assert_close(got["boxes"], want["boxes"], atol=1e-2, rtol=1e-4)
            torch.testing.assert_close(got["scores"], want["scores"], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(got["masks"], want["masks"], atol=1e-3, rtol=1e-3)


def test_mask_pasting_and_rles_equal_torchvision():
    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(12, 1, 28, 28, generator=gen).to(DEVICE)
    xy = torch.rand(12, 2, generator=gen) * torch.tensor([120.0, 90.0])
    boxes = torch.cat([xy, xy + torch.rand(12, 2, generator=gen) * 60], 1).clamp(max=119).to(DEVICE)
    expected = torchvision_paste(masks, boxes, (90, 120))
    assert torch.equal(mask_paste.paste_masks_in_image(masks, boxes, (90, 120)), expected)
    rles = mask_paste.masks_to_rles(masks, boxes, (90, 120))
    for rle, full in zip(rles, (expected[:, 0] > 0.5).cpu().numpy().astype(np.uint8)):
        assert rle["counts"] == coco_mask.encode(np.asfortranarray(full))["counts"].decode("ascii")


@pytest.mark.parametrize("first, second", [(DEVICE, "cpu"), ("cpu", DEVICE)], ids=["cuda-to-cpu", "cpu-to-cuda"])
def test_a_checkpoint_resumes_on_the_other_device(first, second, data, tmp_path):
    out = str(tmp_path / "run")
    run_main(*tiny_argv(data, out, "--device", first, "--amp"), quiet=True)
    ckpt = os.path.join(out, "checkpoint.pth")
    resumed = run_main(*tiny_argv(data, out, "--device", second, "--resume", ckpt, epochs=2), quiet=True)
    assert [r["epoch"] for r in resumed["records"]] == [0, 1] and np.isfinite(resumed["records"][1]["train"]["loss"])
    state = torch.load(ckpt, weights_only=True, map_location="cpu")
    assert all(v.device.type == "cpu" for v in state["model"].values())


def test_predict_on_cuda(data, tmp_path):
    out = str(tmp_path / "run")
    run_main(*tiny_argv(data, out, "--device", DEVICE), quiet=True)
    result = run_main("--predict", os.path.join(data, "PNGImages"), "--weights", os.path.join(out, "checkpoint.pth"),
                      "--device", DEVICE, "--output-dir", str(tmp_path / "p"), "--score-threshold", "0", quiet=True)
    assert len(result["predictions"]) == 6 and not result["failed"]
    names = {f"SynthPed{i:05d}.png.{ext}" for i in range(1, 7) for ext in ("png", "json")}
    assert set(os.listdir(tmp_path / "p" / "predict")) == names | {"results.json", "images.json"}


def test_after_a_cuda_run_the_report_and_an_export_that_onnx_runtime_agrees_with(data, tmp_path):
    """What follows training on a GPU: the run's report, --export (which runs on the CPU) of the
    CUDA-written checkpoint, and --predict through ONNX Runtime against --predict on CUDA."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")

    out = str(tmp_path / "run")
    result = run_main(*tiny_argv(data, out, "--device", DEVICE, "--test-size", "3", "--score-threshold", "0.05",
                                 weights="none", lr="3e-4"), quiet=True)
    with open(os.path.join(out, "report", "report.json")) as f:
        report = json.load(f)
    assert report["metrics"]["bbox"] == pytest.approx(result["bbox"]) and len(report["gallery"]) == 3
    assert os.path.isfile(os.path.join(out, "report", "report.html"))

    ckpt, onnx_path = os.path.join(out, "checkpoint.pth"), str(tmp_path / "model.onnx")
    exported = run_main("--export", onnx_path, "--weights", ckpt, "--device", DEVICE, quiet=True)
    assert exported["verified"]["images"] == 3 and os.path.isfile(onnx_runtime.sidecar_path(onnx_path))
    images = os.path.join(data, "PNGImages")
    for weights, folder in ((ckpt, "cuda"), (onnx_path, "ort")):
        run_main("--predict", images, "--weights", weights, "--device", DEVICE, "--score-threshold", "0.05",
                 "--output-dir", str(tmp_path / folder), quiet=True)
    on_cuda, ort = predicted_detections(tmp_path / "cuda"), predicted_detections(tmp_path / "ort")
    assert on_cuda and set(on_cuda) == set(ort)
    for image_id in on_cuda:
        agreement = onnx_export.compare_predictions(on_cuda[image_id], ort[image_id], 0.05)
        assert agreement["ok"], (image_id, agreement)


@pytest.mark.skipif(not ON_CUDA, reason="NCCL needs CUDA")
def test_torchrun_one_process_with_nccl(data, tmp_path):
    out = str(tmp_path / "ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1",
           os.path.join(ROOT_DIR, "tv_training.py"), *tiny_argv(data, out, "--device", DEVICE)]
    proc = subprocess.run(cmd, cwd=ROOT_DIR, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "backend nccl" in proc.stdout and "IoU metric: segm" in proc.stdout and "max mem: " in proc.stdout
    assert torch.load(os.path.join(out, "checkpoint.pth"), weights_only=True)["epoch"] == 0
