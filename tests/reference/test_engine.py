"""Tests for engine.py: train_one_epoch (logging, warm-up, NaN guard, AMP) and evaluate (COCO scores).

The real Mask R-CNN is built once (tiny input size, few proposals) and trained for a few
iterations; everything that only tests the loop logic uses small fake models.
"""

import contextlib
import hashlib
import io
import math
import os
import re
import warnings

import numpy as np
import pytest
import torch
from conftest import MASK_LOSSES, TINY, build
from PIL import Image
from torchvision.models.detection import MaskRCNN

import coco_utils
import engine
import transforms as T
import tv_training
import utils
from finetune.run import checkpoints, optim

LOSS_TERMS = sorted(MASK_LOSSES)
LOG_LINE = re.compile(
    r"^Epoch: \[(?P<epoch>\d+)\]  \[(?P<i>\s*\d+)/(?P<n>\d+)\]  eta: \d+:\d\d:\d\d  lr: (?P<lr>\d\.\d{6})  "
    r"loss: \S+ \(\S+\)  (?P<terms>.*)  time: \d+\.\d{4}  data: \d+\.\d{4}(  max mem: \d+)?$"
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build("maskrcnn", None, **TINY)


def make_loader(dataset, batch_size=2, shuffle=False):
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=0, collate_fn=utils.collate_fn
    )


def run_quietly(fn, *args, **kwargs):
    """Call fn, returning (result, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = fn(*args, **kwargs)
    return result, out.getvalue()


@pytest.fixture(scope="module")
def epoch0(tiny_model, data_root):
    """One real training epoch (4 images, batch 2: 2 iterations), run once for several tests."""
    torch.manual_seed(0)
    dataset = tv_training.PennFudanDataset(data_root, tv_training.get_transform(train=True))
    loader = make_loader(dataset, shuffle=True)
    params = [p for p in tiny_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    before = [p.detach().clone() for p in params[:3]] + [params[-1].detach().clone()]
    history = []
    logger, out = run_quietly(
        engine.train_one_epoch, tiny_model, optimizer, loader, torch.device("cpu"), 0, 1, loss_history=history
    )
    after = [p.detach() for p in params[:3]] + [params[-1].detach()]
    changed = any(not torch.equal(a, b) for a, b in zip(before, after))
    return dict(logger=logger, out=out, history=history, optimizer=optimizer, n=len(loader), changed=changed)


# --------------------------------------------------------------------------- train_one_epoch, real model


def test_train_one_epoch_losses_finite(epoch0, tiny_model):
    logger = epoch0["logger"]
    assert isinstance(logger, utils.MetricLogger)
    for name in ["loss"] + LOSS_TERMS:
        meter = logger.meters[name]
        assert meter.count == epoch0["n"] == 2, name
        assert math.isfinite(meter.global_avg) and math.isfinite(meter.value), name
    assert epoch0["changed"], "the optimizer did not update the weights"
    assert tiny_model.training  # train_one_epoch leaves the model in train mode


def test_train_one_epoch_log_lines(epoch0):
    lines = epoch0["out"].splitlines()
    epoch_lines = [line for line in lines if line.startswith("Epoch: [0]")]
    assert epoch_lines == lines  # nothing else printed
    assert len(lines) == 3  # print_freq 1: both iterations, then the total
    for i, line in enumerate(lines[:2]):
        m = LOG_LINE.match(line)
        assert m, line
        assert (int(m.group("i")), int(m.group("n"))) == (i, 2)
        for term in LOSS_TERMS:
            assert re.search(rf"  {term}: \d+\.\d{{4}} \(\d+\.\d{{4}}\)", line), (term, line)
    assert re.match(r"^Epoch: \[0\] Total time: \d+:\d\d:\d\d \(\d+\.\d{4} s / it\)$", lines[-1]), lines[-1]


def test_train_one_epoch_warmup_reaches_full_lr(epoch0):
    # 2 iterations: warm-up over len(loader) - 1 = 1 iteration, so the lr is back to the full
    # value after the epoch (and is logged after the scheduler step, as in the reference)
    assert epoch0["optimizer"].param_groups[0]["lr"] == pytest.approx(1e-4)
    assert epoch0["logger"].meters["lr"].value == pytest.approx(1e-4)


def test_train_one_epoch_loss_history(epoch0):
    history = epoch0["history"]
    assert len(history) == epoch0["n"]
    assert [r["iteration"] for r in history] == [0, 1]
    assert all(r["epoch"] == 0 for r in history)
    for record in history:
        assert set(record) == set(LOSS_TERMS) | {"loss", "epoch", "iteration"}
        assert record["loss"] == pytest.approx(sum(record[k] for k in LOSS_TERMS), rel=1e-5)
        assert all(math.isfinite(record[k]) for k in LOSS_TERMS)
    # the history and the logger saw the same values
    logger = epoch0["logger"]
    assert logger.meters["loss"].global_avg == pytest.approx(np.mean([r["loss"] for r in history]), rel=1e-6)
    assert logger.meters["loss_mask"].value == pytest.approx(history[-1]["loss_mask"], rel=1e-6)


# --------------------------------------------------------------------------- loop logic, fake models


class LossModel(torch.nn.Module):
    """A tiny 'detector': a linear layer on image statistics; records what it sees per call.

    ``bad`` maps a call index to a value (nan / inf) returned as ``loss_a`` on that call.
    """

    def __init__(self, bad=None):
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)
        self.optimizer = None
        self.bad = bad or {}
        self.calls = []

    def forward(self, images, targets=None):
        x = torch.stack([img.float().mean(dim=(1, 2)) for img in images])
        y = self.linear(x)
        self.calls.append(dict(
            lr=self.optimizer.param_groups[0]["lr"] if self.optimizer else None,
            autocast=torch.is_autocast_enabled("cpu"),
            dtype=y.dtype,
            weight=self.linear.weight.detach().clone(),
            n_targets=len(targets),
        ))
        i = len(self.calls) - 1
        loss_a = (y.float() ** 2).mean()
        if i in self.bad:
            loss_a = loss_a * 0 + self.bad[i]
        return {"loss_a": loss_a, "loss_b": y.float().abs().mean()}


def fake_batches(n, batch_size=2):
    g = torch.Generator().manual_seed(0)
    return [
        (tuple(torch.rand(3, 8, 8, generator=g) for _ in range(batch_size)),
         tuple({"image_id": i * batch_size + j, "boxes": torch.zeros(0, 4)} for j in range(batch_size)))
        for i in range(n)
    ]


def make_fake(bad=None, lr=0.005):
    torch.manual_seed(0)
    model = LossModel(bad)
    model.optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return model, model.optimizer


def test_warmup_schedule_epoch0_matches_tutorial_log():
    """Tutorial run: lr 0.005, 60 iterations -> first line 'lr: 0.000090'."""
    lr, n = 0.005, 60
    model, optimizer = make_fake(lr=lr)
    logger, out = run_quietly(engine.train_one_epoch, model, optimizer, fake_batches(n), "cpu", 0, 10)
    warmup = min(1000, n - 1)

    def factor(step):
        return 1 / 1000 + (1 - 1 / 1000) * min(step, warmup) / warmup

    # the lr the optimizer steps with at iteration i: lr/1000 at i = 0, rising linearly to lr
    used = [c["lr"] for c in model.calls]
    assert used[0] == pytest.approx(lr / 1000)
    assert used == pytest.approx([lr * factor(i) for i in range(n)])
    assert np.all(np.diff(used[:warmup + 1]) > 0)
    assert used[warmup] == pytest.approx(lr)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(lr)

    # the logged lr is read after the scheduler step (as in the reference engine)
    logged = [(int(m.group("i")), m.group("lr")) for m in map(LOG_LINE.match, out.splitlines()) if m]
    assert [i for i, _ in logged] == [0, 10, 20, 30, 40, 50, 59]
    assert logged == [(i, f"{lr * factor(i + 1):.6f}") for i, _ in logged]
    assert logged[0][1] == "0.000090"  # the tutorial's first log line
    assert out.splitlines()[0].startswith("Epoch: [0]  [ 0/60]  eta: ")
    assert out.splitlines()[-1].startswith("Epoch: [0] Total time: ")


@pytest.mark.parametrize("epoch", [1, 4])
def test_no_warmup_after_epoch0(epoch):
    model, optimizer = make_fake(lr=0.02)
    logger, out = run_quietly(engine.train_one_epoch, model, optimizer, fake_batches(5), "cpu", epoch, 1)
    assert [c["lr"] for c in model.calls] == [0.02] * 5
    assert re.findall(r"lr: (\S+)", out) == ["0.020000"] * 5
    assert all(line.startswith(f"Epoch: [{epoch}]") for line in out.splitlines())
    assert optimizer.param_groups[0]["lr"] == 0.02
    assert logger.meters["loss_a"].count == 5 and logger.meters["loss_b"].count == 5
    assert model.calls[0]["n_targets"] == 2  # targets are passed to the model in training


def test_single_batch_epoch0_has_no_warmup():
    model, optimizer = make_fake(lr=0.01)
    run_quietly(engine.train_one_epoch, model, optimizer, fake_batches(1), "cpu", 0, 1)
    assert [c["lr"] for c in model.calls] == [0.01]


def test_loss_history_fake_model():
    model, optimizer = make_fake()
    history = []
    run_quietly(engine.train_one_epoch, model, optimizer, fake_batches(3), "cpu", 2, 1, loss_history=history)
    assert [(r["epoch"], r["iteration"]) for r in history] == [(2, 0), (2, 1), (2, 2)]
    assert all(set(r) == {"loss_a", "loss_b", "loss", "epoch", "iteration"} for r in history)
    assert all(r["loss"] == pytest.approx(r["loss_a"] + r["loss_b"]) for r in history)
    # without loss_history nothing is collected and the call still works
    run_quietly(engine.train_one_epoch, model, optimizer, fake_batches(1), "cpu", 3, 1)


class CountedReads(torch.Tensor):
    """A loss tensor that counts reads of its values on the host (what waits for a GPU on CUDA);
    results computed from it (sums, stacks, detached copies) stay CountedReads."""

    reads = 0

    def item(self):
        CountedReads.reads += 1
        return super().item()

    def tolist(self):
        CountedReads.reads += 1
        return super().tolist()


def test_one_device_to_host_read_per_iteration(monkeypatch):
    # On CUDA every .item() waits for the GPU; the loop reads all its logged losses in one copy.
    class Counted(LossModel):
        def forward(self, images, targets=None):
            return {k: v.as_subclass(CountedReads) for k, v in super().forward(images, targets).items()}

    torch.manual_seed(0)
    model = Counted()
    optimizer = model.optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    monkeypatch.setattr(CountedReads, "reads", 0)
    history = []
    run_quietly(engine.train_one_epoch, model, optimizer, fake_batches(3), "cpu", 1, 1, loss_history=history)
    assert CountedReads.reads == 3
    assert all(r["loss"] == pytest.approx(r["loss_a"] + r["loss_b"]) for r in history)
    assert model.calls[1]["weight"].ne(model.calls[0]["weight"]).any()  # it trained: the gradients flowed


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_non_finite_loss_raises(bad_value):
    model, optimizer = make_fake(bad={1: bad_value})
    with pytest.raises(engine.NonFiniteLossError) as excinfo:
        run_quietly(engine.train_one_epoch, model, optimizer, fake_batches(3), "cpu", 3, 1)
    message = str(excinfo.value)
    assert "loss_a" in message
    assert "epoch 3" in message
    assert "iteration 1" in message
    assert isinstance(excinfo.value, FloatingPointError)
    assert len(model.calls) == 2  # stopped at the bad iteration
    # the weights were not updated with the non-finite loss
    assert torch.equal(model.linear.weight.detach(), model.calls[1]["weight"])


def test_non_finite_loss_minimal_module():
    class NaNModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, images, targets):
            return {"loss_ok": self.w.sum(), "loss_nan": torch.tensor(float("nan"), requires_grad=True)}

    model = NaNModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(engine.NonFiniteLossError, match="loss_nan") as excinfo:
        run_quietly(engine.train_one_epoch, model, optimizer, fake_batches(2), "cpu", 0, 1)
    assert "loss_nan=nan" in str(excinfo.value)
    assert "epoch 0" in str(excinfo.value) and "iteration 0" in str(excinfo.value)
    assert model.w.item() == 1.0


def test_amp_on_cpu_uses_bf16_autocast_without_deprecation_warnings():
    model, optimizer = make_fake(lr=0.01)
    scaler = torch.amp.GradScaler("cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger, _ = run_quietly(engine.train_one_epoch, model, optimizer, fake_batches(3), "cpu", 1, 1, scaler)
    assert all(c["autocast"] and c["dtype"] == torch.bfloat16 for c in model.calls)
    assert math.isfinite(logger.meters["loss"].global_avg)
    assert not torch.equal(model.calls[0]["weight"], model.linear.weight.detach())  # steps were taken
    amp_warnings = [
        w for w in caught
        if issubclass(w.category, (FutureWarning, DeprecationWarning)) and "amp" in str(w.message)
    ]
    assert amp_warnings == [], [str(w.message) for w in amp_warnings]

    # without a scaler: full precision
    model, optimizer = make_fake(lr=0.01)
    run_quietly(engine.train_one_epoch, model, optimizer, fake_batches(1), "cpu", 1, 1)
    assert not model.calls[0]["autocast"] and model.calls[0]["dtype"] == torch.float32


def test_amp_grad_scaler_scales_only_on_cuda():
    """--amp on the CPU (bfloat16): a disabled scaler still makes train_one_epoch autocast, and
    takes the steps an enabled one takes (scaling by a power of 2 is exact), without the scaling."""
    assert optim.make_grad_scaler("cpu", False) is None
    scaler = optim.make_grad_scaler("cpu", True)
    assert isinstance(scaler, torch.amp.GradScaler) and not scaler.is_enabled()
    loss = torch.tensor(2.5, requires_grad=True)
    assert scaler.scale(loss) is loss
    weights = []
    for scaler in (optim.make_grad_scaler("cpu", True), torch.amp.GradScaler("cpu")):
        torch.manual_seed(0)
        model, optimizer = make_fake(lr=0.01)
        run_quietly(engine.train_one_epoch, model, optimizer, fake_batches(3), "cpu", 1, 1, scaler)
        assert all(c["autocast"] and c["dtype"] == torch.bfloat16 for c in model.calls)
        weights.append(model.linear.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])


def test_resume_takes_an_empty_scaler_state():
    """A checkpoint trained with --amp on the CPU holds a disabled scaler's empty state; resumed
    with an enabled scaler (CUDA), it starts that scaler afresh instead of failing."""
    model, optimizer = make_fake(lr=0.01)
    lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    checkpoint = dict(optimizer=optimizer.state_dict(), lr_scheduler=lr_scheduler.state_dict(), epoch=0, records=[],
                      scaler=optim.make_grad_scaler("cpu", True).state_dict())
    assert checkpoint["scaler"] == {}
    enabled = torch.amp.GradScaler("cpu", init_scale=8.0)
    checkpoints.restore_training_state(checkpoint, optimizer, lr_scheduler, enabled)
    assert enabled.get_scale() == 8.0
    checkpoint["scaler"] = torch.amp.GradScaler("cpu", init_scale=1024.0).state_dict()
    checkpoints.restore_training_state(checkpoint, optimizer, lr_scheduler, enabled)
    assert enabled.get_scale() == 1024.0


def test_amp_real_model_losses_finite(tiny_model, data_root):
    """One bf16-autocast iteration of the real Mask R-CNN (2 images)."""
    dataset = torch.utils.data.Subset(
        tv_training.PennFudanDataset(data_root, tv_training.get_transform(train=True)), [0, 1]
    )
    params = [p for p in tiny_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    history = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger, _ = run_quietly(
            engine.train_one_epoch, tiny_model, optimizer, make_loader(dataset), "cpu", 1, 1,
            torch.amp.GradScaler("cpu"), loss_history=history,
        )
    assert len(history) == 1
    for name in ["loss"] + LOSS_TERMS:
        assert math.isfinite(logger.meters[name].global_avg), name
    assert not [w for w in caught if "torch.cuda.amp" in str(w.message)]


# --------------------------------------------------------------------------- evaluate


def _key(image):
    image = image.detach().cpu().contiguous()
    return tuple(image.shape), hashlib.sha1(image.numpy().tobytes()).hexdigest()


class GroundTruthMaskRCNN(MaskRCNN):
    """Passes ``isinstance(model, MaskRCNN)`` (so evaluate scores segm too) without building one.

    It answers each image with that image's ground truth, found by the image's content.
    """

    def __init__(self, dataset, empty=False):
        torch.nn.Module.__init__(self)  # no backbone/heads: forward is replaced entirely
        self.targets = {_key(img): target for img, target in (dataset[i] for i in range(len(dataset)))}
        self.empty = empty
        self.threads = []

    def forward(self, images, targets=None):
        assert targets is None  # evaluate does not pass targets
        assert not self.training  # evaluate puts the model in eval mode
        self.threads.append(torch.get_num_threads())
        outputs = []
        for image in images:
            target = self.targets[_key(image)]
            n = 0 if self.empty else len(target["boxes"])
            h, w = image.shape[-2:]
            outputs.append({
                "boxes": torch.as_tensor(target["boxes"], dtype=torch.float32)[:n],
                "labels": torch.as_tensor(target["labels"])[:n],
                "scores": torch.ones(n),
                "masks": torch.as_tensor(target["masks"]).float()[:n, None].reshape(n, 1, h, w),
            })
        return outputs


class TensorImageIds(torch.utils.data.Dataset):
    """The same data with the 2019 tutorial's ``image_id = torch.tensor([idx])``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, idx):
        image, target = self.dataset[idx]
        target = dict(target)
        assert isinstance(target["image_id"], int)
        target["image_id"] = torch.tensor([target["image_id"]])
        return image, target


@pytest.fixture(scope="module")
def eval_dataset(data_root):
    return tv_training.PennFudanDataset(data_root, tv_training.get_transform(train=False))


@pytest.mark.parametrize("tensor_ids", [False, True], ids=["int_image_id", "tensor_image_id"])
def test_evaluate_ground_truth_scores_one(eval_dataset, tensor_ids, capsys):
    dataset = TensorImageIds(eval_dataset) if tensor_ids else eval_dataset
    model = GroundTruthMaskRCNN(dataset).train()
    evaluator = engine.evaluate(model, make_loader(dataset, batch_size=3), "cpu")
    out = capsys.readouterr().out
    assert set(evaluator.coco_eval) == {"bbox", "segm"}
    for iou_type in ("bbox", "segm"):
        stats = evaluator.coco_eval[iou_type].stats
        assert len(stats) == 12
        assert stats[0] == pytest.approx(1.0), iou_type  # AP
        assert stats[1] == pytest.approx(1.0), iou_type  # AP50
        assert stats[8] == pytest.approx(1.0), iou_type  # AR100
    assert "IoU metric: bbox" in out and "IoU metric: segm" in out
    assert out.index("IoU metric: bbox") < out.index("IoU metric: segm")
    assert re.search(r"^Test:  \[0/2\]  eta: ", out, re.M)
    assert re.search(r"^Test:  \[1/2\]  eta: .*model_time: ", out, re.M)
    assert re.search(r"^Test: Total time: ", out, re.M)
    assert "Averaged stats: model_time: " in out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000" in out


@pytest.mark.parametrize("tensor_ids", [False, True], ids=["int_image_id", "tensor_image_id"])
def test_evaluate_no_detections_scores_zero(eval_dataset, tensor_ids, capsys):
    dataset = TensorImageIds(eval_dataset) if tensor_ids else eval_dataset
    evaluator = engine.evaluate(GroundTruthMaskRCNN(dataset, empty=True), make_loader(dataset), "cpu")
    for iou_type in ("bbox", "segm"):
        assert evaluator.coco_eval[iou_type].stats[0] == 0.0, iou_type
        assert evaluator.coco_eval[iou_type].stats[8] == 0.0, iou_type


def test_evaluate_box_model_scores_bbox_only(eval_dataset, capsys):
    class BoxOnly(torch.nn.Module):
        def __init__(self, gt):
            super().__init__()
            self.gt = gt

        def forward(self, images):
            return [{k: v for k, v in o.items() if k != "masks"} for o in self.gt(images)]

    gt = GroundTruthMaskRCNN(eval_dataset)
    evaluator = engine.evaluate(BoxOnly(gt), make_loader(eval_dataset), "cpu")
    assert list(evaluator.coco_eval) == ["bbox"]
    assert evaluator.coco_eval["bbox"].stats[0] == pytest.approx(1.0)
    assert "IoU metric: segm" not in capsys.readouterr().out


def test_evaluate_uses_given_coco_gt(eval_dataset, monkeypatch, capsys):
    coco_gt = coco_utils.get_coco_api_from_dataset(eval_dataset)
    n_anns = len(coco_gt.anns)

    def must_not_be_called(dataset):
        raise AssertionError("evaluate rebuilt the ground truth although coco_gt was given")

    monkeypatch.setattr(engine, "get_coco_api_from_dataset", must_not_be_called)
    model = GroundTruthMaskRCNN(eval_dataset)
    for _ in range(2):  # the same ground truth object serves several evaluations
        evaluator = engine.evaluate(model, make_loader(eval_dataset), "cpu", coco_gt=coco_gt)
        assert evaluator.coco_eval["bbox"].stats[0] == pytest.approx(1.0)
        assert evaluator.coco_eval["segm"].stats[0] == pytest.approx(1.0)
    assert len(coco_gt.anns) == n_anns  # not modified by the evaluations
    with pytest.raises(AssertionError, match="rebuilt"):
        engine.evaluate(model, make_loader(eval_dataset), "cpu")


def test_evaluate_keeps_thread_count(eval_dataset, capsys):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = GroundTruthMaskRCNN(eval_dataset)
        engine.evaluate(model, make_loader(eval_dataset), "cpu")
        assert model.threads == [2, 2]  # not forced to 1 while the model runs
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- the 2019 tutorial's client code


class PennFudanDataset2019:
    """The dataset class of the 2019 tutorial, verbatim in spirit: PIL + numpy, plain tensors."""

    def __init__(self, root, transforms):
        self.root = root
        self.transforms = transforms
        self.imgs = list(sorted(os.listdir(os.path.join(root, "PNGImages"))))
        self.masks = list(sorted(os.listdir(os.path.join(root, "PedMasks"))))

    def __getitem__(self, idx):
        img_path = os.path.join(self.root, "PNGImages", self.imgs[idx])
        mask_path = os.path.join(self.root, "PedMasks", self.masks[idx])
        img = Image.open(img_path).convert("RGB")
        mask = np.array(Image.open(mask_path))
        obj_ids = np.unique(mask)[1:]
        masks = mask == obj_ids[:, None, None]
        num_objs = len(obj_ids)
        boxes = []
        for i in range(num_objs):
            pos = np.where(masks[i])
            boxes.append([np.min(pos[1]), np.min(pos[0]), np.max(pos[1]), np.max(pos[0])])
        boxes = torch.as_tensor(boxes, dtype=torch.float32)
        labels = torch.ones((num_objs,), dtype=torch.int64)
        masks = torch.as_tensor(masks, dtype=torch.uint8)
        image_id = torch.tensor([idx])
        area = (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 2] - boxes[:, 0])
        iscrowd = torch.zeros((num_objs,), dtype=torch.int64)
        target = {"boxes": boxes, "labels": labels, "masks": masks, "image_id": image_id,
                  "area": area, "iscrowd": iscrowd}
        if self.transforms is not None:
            img, target = self.transforms(img, target)
        return img, target

    def __len__(self):
        return len(self.imgs)


def get_transform_2019(train):
    transforms = [T.ToTensor()]
    if train:
        transforms.append(T.RandomHorizontalFlip(0.5))
    return T.Compose(transforms)


def test_2019_client_trains_and_evaluates(tiny_model, data_root, capsys):
    torch.manual_seed(0)
    dataset = torch.utils.data.Subset(PennFudanDataset2019(data_root, get_transform_2019(train=True)), [0, 1])
    dataset_test = torch.utils.data.Subset(PennFudanDataset2019(data_root, get_transform_2019(train=False)), [2, 3])
    image, target = dataset[0]
    assert image.dtype == torch.float32 and image.max() <= 1.0
    assert isinstance(target["image_id"], torch.Tensor)

    params = [p for p in tiny_model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.0001, momentum=0.9, weight_decay=0.0005)
    logger = engine.train_one_epoch(tiny_model, optimizer, make_loader(dataset), "cpu", 0, print_freq=10)
    for name in ["loss"] + LOSS_TERMS:
        assert math.isfinite(logger.meters[name].global_avg), name

    evaluator = engine.evaluate(tiny_model, make_loader(dataset_test), device=torch.device("cpu"))
    assert set(evaluator.coco_eval) == {"bbox", "segm"}
    for iou_type in ("bbox", "segm"):
        stats = evaluator.coco_eval[iou_type].stats
        assert len(stats) == 12
        # AP and AR100 over all areas: -1 would mean the test images' objects never reached COCOeval
        assert stats[0] >= 0 and stats[8] >= 0, stats
    assert sorted(evaluator.img_ids) == [2, 3]  # the tensor image ids became COCO ids
    out = capsys.readouterr().out
    assert "Epoch: [0]  [0/1]" in out and "IoU metric: segm" in out


@pytest.mark.parametrize("use_scaler", [False, True])
def test_clip_grad_norm_bounds_each_update(use_scaler):
    """With clipping, one plain-SGD step moves the weights by at most lr * max_norm."""
    lr, max_norm = 1.0, 1e-3
    model = LossModel()
    model.optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    batches = [(tuple(torch.full((3, 4, 4), 50.0) for _ in range(2)), ({"image_id": 0}, {"image_id": 1}))] * 3
    scaler = torch.amp.GradScaler("cpu") if use_scaler else None
    before = [p.detach().clone() for p in model.parameters()]
    run_quietly(engine.train_one_epoch, model, model.optimizer, batches, "cpu", 1, 10, scaler,
                clip_grad_norm=max_norm)
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert 0 < float(moved) <= 3 * lr * max_norm * 1.001
    # without clipping the same data moves the weights by far more
    model = LossModel()
    model.optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    before = [p.detach().clone() for p in model.parameters()]
    run_quietly(engine.train_one_epoch, model, model.optimizer, batches[:1], "cpu", 1, 10)
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert float(moved) > 100 * lr * max_norm
