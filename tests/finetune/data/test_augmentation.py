"""finetune/data/augmentation.py: train.py's --data-augmentation presets and --use-copypaste keep every
box around its mask, drop the objects they empty, keep labels with their objects, and work on
box-only targets and images without objects; the flags' bad combinations are one line."""

import numpy as np
import pytest
import torch
from conftest import run_main, tiny_argv
from test_arguments import cli
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes

import tv_training
from finetune.data import augmentation
from finetune.data.synthetic import make_synthetic_image
from finetune.errors import DatasetError, TutorialError
from finetune.run import settings

MIN_SIZE, MAX_SIZE = 128, 224
SEEDS = range(25)


def sample(seed, height=96, width=128, with_masks=True):
    """A synthetic image with 1-4 pedestrians; mask k holds the value of its label (k + 1, so
    each object's label can be read back from its mask); boxes: the masks' pixel extent."""
    img, ids = make_synthetic_image(np.random.default_rng(seed), height, width)
    labels = torch.arange(1, int(ids.max()) + 1)
    masks = torch.from_numpy(np.stack([(ids == k) * k for k in labels.tolist()]).astype(np.uint8))
    boxes = masks_to_boxes(masks)
    boxes[:, 2:] += 1  # the far edge of the last pixel, as COCO's boxes
    target = dict(boxes=tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)), labels=labels,
                  image_id=seed, area=(boxes[:, 2:] - boxes[:, :2]).prod(dim=1),
                  iscrowd=torch.zeros(len(labels), dtype=torch.int64))
    if with_masks:
        target["masks"] = tv_tensors.Mask(masks)
    return tv_tensors.Image(torch.from_numpy(img.copy()).permute(2, 0, 1)), target


def check_objects(image, target, with_masks=True, box_area=True):
    """Every box inside the image and at least 1 px; per object: its mask not empty, holding only
    its label, and enclosed by its box (within 1 px); with ``box_area``, areas are the boxes'
    (copy-paste makes them the masks' pixel sums where it pastes, as the reference does)."""
    height, width = image.shape[-2:]
    boxes, labels = target["boxes"], target["labels"]
    n = len(labels)
    assert boxes.shape == (n, 4) and target["iscrowd"].shape == (n,) and type(boxes) is torch.Tensor
    assert (boxes[:, 2:] - boxes[:, :2] >= 1).all()
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    assert target["area"].shape == (n,)
    if box_area:
        assert torch.allclose(target["area"], (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    if not with_masks:
        assert "masks" not in target
        return
    masks = target["masks"]
    assert masks.shape == (n, height, width)
    for mask, label, box in zip(masks, labels, boxes):
        assert set(mask.unique().tolist()) == {0, int(label)}  # not empty, and this object's
        x0, y0, x1, y1 = masks_to_boxes(mask[None].bool().to(torch.uint8))[0].tolist()
        assert box[0] <= x0 + 1 and box[1] <= y0 + 1 and box[2] >= x1 and box[3] >= y1, (box, (x0, y0, x1, y1))


@pytest.mark.parametrize("preset", augmentation.PRESETS)
def test_each_preset_keeps_boxes_around_masks_and_drops_what_it_empties(preset):
    transform = augmentation.get_transform(True, preset, MIN_SIZE, MAX_SIZE)
    sizes, changed = set(), 0
    for seed in SEEDS:
        image, target = sample(seed)
        torch.manual_seed(seed)
        out, out_target = transform(image, target)
        assert out.dtype == torch.float32 and out.shape[0] == 3 and out_target["image_id"] == seed
        check_objects(out, out_target)
        sizes.add(tuple(out.shape[-2:]))
        changed += not torch.equal(out_target["boxes"], target["boxes"].as_subclass(torch.Tensor))
    assert changed > 0  # the preset does something
    side = augmentation.lsj_side(MIN_SIZE, MAX_SIZE)
    if preset == "hflip":
        assert sizes == {(96, 128)}
    elif preset == "lsj":
        assert sizes == {(side, side)} and side == 160
    elif preset == "multiscale":
        assert {min(s) for s in sizes} <= set(augmentation.multiscale_sides(MIN_SIZE)) and len(sizes) > 3
    else:
        assert len(sizes) > 3  # zoomed out and cropped


def test_sizes_are_train_py_s_at_the_tutorial_s_min_size_and_scale_with_it():
    assert augmentation.lsj_side(800, 1333) == 1024
    assert augmentation.multiscale_sides(800) == tuple(range(480, 801, 32))
    assert augmentation.lsj_side(128, 224) == 160 and augmentation.lsj_side(800, 900) == 900
    assert augmentation.multiscale_sides(128)[-1] == 128


def test_hflip_is_the_tutorial_transform_draw_for_draw():
    image, target = sample(0)
    for train in (True, False):
        torch.manual_seed(1)
        ours = augmentation.get_transform(train, "hflip")(image, target)
        torch.manual_seed(1)
        tutorial = tv_training.get_transform(train)(image, target)
        assert torch.equal(ours[0], tutorial[0]) and torch.equal(ours[1]["boxes"], tutorial[1]["boxes"])
    for preset in augmentation.PRESETS:  # testing never augments
        out, _ = augmentation.get_transform(False, preset)(image, target)
        assert torch.equal(out, tv_training.get_transform(False)(image, target)[0])


@pytest.mark.parametrize("preset", augmentation.PRESETS)
def test_box_only_targets_get_the_same_boxes(preset):
    """Without masks the same draws give the same boxes and labels (those whose mask was emptied aside)."""
    transform = augmentation.get_transform(True, preset, MIN_SIZE, MAX_SIZE)
    for seed in range(10):
        torch.manual_seed(seed)
        with_masks = transform(*sample(seed))[1]
        torch.manual_seed(seed)
        out, boxes_only = transform(*sample(seed, with_masks=False))
        check_objects(out, boxes_only, with_masks=False)
        kept = [i for i, label in enumerate(boxes_only["labels"].tolist()) if label in with_masks["labels"].tolist()]
        assert torch.equal(boxes_only["boxes"][kept], with_masks["boxes"])


@pytest.mark.parametrize("preset", augmentation.PRESETS)
def test_an_image_without_objects_passes_every_preset(preset):
    """Negative images (Penn-Fudan without pedestrians, COCO images without annotations): RandomIoUCrop
    finds no box to keep and leaves the image as it is; nothing crashes."""
    transform = augmentation.get_transform(True, preset, MIN_SIZE, MAX_SIZE)
    image, _ = sample(0)
    target = dict(boxes=tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(96, 128)),
                  masks=tv_tensors.Mask(torch.zeros(0, 96, 128, dtype=torch.uint8)),
                  labels=torch.zeros(0, dtype=torch.int64), image_id=0, area=torch.zeros(0),
                  iscrowd=torch.zeros(0, dtype=torch.int64))
    for seed in range(5):
        torch.manual_seed(seed)
        out, out_target = transform(image, target)
        check_objects(out, out_target)
        assert len(out_target["labels"]) == 0


def test_copy_paste_collate_pastes_aligned_objects():
    transform = augmentation.get_transform(True, "lsj", MIN_SIZE, MAX_SIZE)
    pasted = 0
    for seed in range(10):
        torch.manual_seed(seed)
        batch = [transform(*sample(seed * 3 + k)) for k in range(3)]
        images, targets = augmentation.train_collate(True)(batch)
        for image, target, (_, before) in zip(images, targets, batch):
            assert image.shape == (3, 160, 160)
            check_objects(image, target, box_area=False)
            pasted += len(target["labels"]) > len(before["labels"])
    assert pasted > 0
    assert augmentation.train_collate(False) is tv_training.utils.collate_fn


def test_lsj_with_copy_paste_trains_end_to_end(data, tmp_path, monkeypatch, one_thread):
    """A tiny run: copy-paste makes every training batch, on lsj's square canvases that the
    model takes at that size; the checkpoint keeps the preset, which --resume takes."""
    shapes = []
    paste = augmentation.COPY_PASTE

    def spy(images, targets):
        shapes.extend(tuple(im.shape) for im in images)
        return paste(images, targets)

    monkeypatch.setattr(augmentation, "COPY_PASTE", spy)
    out = str(tmp_path / "run")
    result = run_main(*tiny_argv(data, out, "--data-augmentation", "lsj", "--use-copypaste", weights="none",
                                 lr="3e-4"), quiet=True)
    assert set(shapes) == {(3, 96, 96)} and len(shapes) == 4  # 4 training images, lsj_side(64, 96)
    assert 0 <= result["bbox"]["AP"] <= 1 and 0 <= result["segm"]["AP"] <= 1
    assert all(np.isfinite(v) for v in result["iteration_losses"])
    checkpoint = torch.load(f"{out}/checkpoint.pth", weights_only=False)
    assert checkpoint["args"]["data_augmentation"] == "lsj" and checkpoint["args"]["use_copypaste"] is True
    run, _ = settings.settle(tv_training.get_args_parser().parse_args(["--resume", f"{out}/checkpoint.pth",
                                                                       "--epochs", "3", "--device", "cpu"]),
                             lambda path: checkpoint)
    assert run.data_augmentation == "lsj" and run.use_copypaste is True


def test_the_model_skips_its_resize_for_lsj_and_multiscale_only():
    """In training, lsj and multiscale images reach the backbone at the size the preset gave them; the
    other presets' are resized to --min-size; evaluation always resizes."""
    model = tv_training.MODELS["fasterrcnn"](2, weights=None, weights_backbone=None, min_size=64, max_size=96)
    image = torch.rand(3, 40, 50)
    target = dict(boxes=torch.tensor([[4.0, 4.0, 20.0, 30.0]]), labels=torch.tensor([1]))
    for preset in augmentation.PRESETS + ("hflip",):  # hflip last: a model set for lsj goes back to resizing
        model = augmentation.train_at_preset_size(model, preset)
        sized = preset in ("lsj", "multiscale")
        model.train()
        images, targets = model.transform([image.clone()], [dict(target)])
        assert tuple(images.image_sizes[0]) == ((40, 50) if sized else (64, 80)), preset
        assert torch.equal(targets[0]["boxes"], target["boxes"]) is sized
        model.eval()
        assert tuple(model.transform([image.clone()])[0].image_sizes[0]) == (64, 80), preset


def test_copy_paste_without_lsj_or_masks_is_one_line(tmp_path, capsys):
    code, _, err = cli(["--use-copypaste", "--output-dir", str(tmp_path)], capsys)
    assert code == 2 and "argument --use-copypaste: works with --data-augmentation lsj only" in err
    assert "Traceback" not in err
    code, _, err = cli(["--data-augmentation", "mosaic"], capsys)
    assert code == 2 and "invalid choice: 'mosaic'" in err
    args = tv_training.get_args_parser().parse_args(["--data-augmentation", "lsj", "--use-copypaste", "--weights",
                                                     "none", "--output-dir", "", "--device", "cpu"])
    run, _ = settings.settle(args, lambda path: None)
    data = dict(train=[0, 1, 2], classes=[dict(id=1, name="car")], has_masks=False)
    with pytest.raises(DatasetError, match=r"cars.json: --use-copypaste pastes objects by their masks"):
        settings.settle_for_data(dict_run(run, "cars.json"), data)
    # resumed from a checkpoint older than the flags (hflip then), a typed --use-copypaste alone
    ckpt = dict(model={}, optimizer={}, lr_scheduler={}, epoch=0, args=dict(lr=0.005))
    resumed = tv_training.get_args_parser().parse_args(["--resume", str(tmp_path / "checkpoint.pth"),
                                                        "--use-copypaste", "--device", "cpu"])
    with pytest.raises(TutorialError, match="checkpoint.pth: argument --use-copypaste: works with"):
        settings.settle(resumed, lambda path: ckpt)


def dict_run(run, data_path):
    run.data_path = data_path
    return run
