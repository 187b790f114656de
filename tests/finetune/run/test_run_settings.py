"""finetune/run/settings.py: the run's settings settled once, in the stated order (flags, the demo's recipe,
a checkpoint's, the box-only fallback), on a copy of the parsed arguments; the checks only raise or warn."""

import copy

import pytest
import torch

import tv_training
from finetune.errors import DatasetError, TutorialError
from finetune.models import pretrained, small_maskrcnn
from finetune.run import checks, demo, flags, settings


def parse(*argv):
    return tv_training.get_args_parser().parse_args(list(argv))


def settle(args, checkpoint=None):
    return settings.settle(args, lambda path: checkpoint)


def resumable(**trained):
    """A checkpoint to --resume (its training state is not read by the settings)."""
    return dict(model={"w": torch.zeros(1)}, optimizer={}, lr_scheduler={}, epoch=0, args=trained)


def test_settle_works_on_a_copy_and_the_demo_recipe_fills_only_untyped_flags(tmp_path):
    args = parse("--demo", "--lr", "0.01", "--output-dir", str(tmp_path / "out"), "--device", "cpu")
    typed = copy.deepcopy(vars(args))
    run, checkpoint = settle(args)
    assert checkpoint is None
    assert vars(args) == typed  # the parsed arguments stay as typed
    assert run.lr == 0.01 and run.opt == demo.DEMO_RECIPE["opt"] and run.model == demo.DEMO_RECIPE["model"]
    assert run.distributed is False  # the process group's settings are part of the settled ones


def test_a_checkpoint_recipe_comes_after_the_demo_recipe(tmp_path, capsys):
    """--demo --resume: the checkpoint's recipe wins over the demo's (it is the run being continued);
    a typed flag that contradicts the checkpoint is an error naming both."""
    ckpt = resumable(model="maskrcnn_resnet18", demo=True, opt="adamw", lr=0.002, epochs=9, data_path="elsewhere")
    args = parse("--demo", "--resume", str(tmp_path / "checkpoint.pth"), "--output-dir", str(tmp_path / "out"),
                 "--device", "cpu")
    run, checkpoint = settle(args, ckpt)
    assert checkpoint is ckpt
    assert run.lr == 0.002 and run.epochs == 9 and run.data_path == "elsewhere"
    assert run.output_dir == str(tmp_path / "out")  # typed: kept
    assert "From " in capsys.readouterr().out
    typed = parse("--demo", "--lr", "0.1", "--resume", str(tmp_path / "checkpoint.pth"), "--device", "cpu")
    with pytest.raises(TutorialError, match=r"--lr 0.1 contradicts .* trained with --lr 0.002"):
        settle(typed, ckpt)
    # untyped --output-dir: the run continues in the checkpoint's folder
    run, _ = settle(parse("--resume", str(tmp_path / "checkpoint.pth"), "--device", "cpu"),
                    resumable(lr=0.002, data_path="elsewhere"))
    assert run.output_dir == str(tmp_path)


def test_box_only_data_falls_back_to_faster_rcnn_last(capsys):
    run, _ = settle(parse("--output-dir", "", "--weights", "none", "--device", "cpu"))
    data = dict(train=[0, 1, 2], classes=[dict(id=1, name="car")], has_masks=True)
    assert settings.settle_for_data(run, data).model == "maskrcnn"
    assert settings.settle_for_data(run, dict(data, has_masks=False)).model == "fasterrcnn"
    assert "box-only Faster R-CNN" in capsys.readouterr().out
    typed, _ = settle(parse("--output-dir", "", "--weights", "none", "--device", "cpu", "--model", "maskrcnn"))
    with pytest.raises(TutorialError, match="no mask to train --model maskrcnn"):
        settings.settle_for_data(typed, dict(data, has_masks=False))
    # fewer training images than one batch: the loader, which drops an incomplete batch, would yield none
    few, _ = settle(parse("--output-dir", "", "--weights", "none", "--device", "cpu", "-b", "4"))
    with pytest.raises(DatasetError, match=r"3 training image\(s\) is fewer than one batch \(-b 4\)"):
        settings.settle_for_data(few, data)


def test_the_checks_only_raise_or_warn(tmp_path):
    args = parse("--output-dir", str(tmp_path / "out"), "--weights", "none", "--device", "cpu", "--test-only")
    before = copy.deepcopy(vars(args))
    settings.check_run(args, None, None, lambda path: None)
    assert vars(args) == before
    car = [dict(id=1, name="car")]
    assert checks.check_model_for_data("cars.json", "maskrcnn", False, False, car) == "box-only"
    assert checks.check_model_for_data("cars.json", "maskrcnn", False, True, car) is None
    with pytest.raises(TutorialError, match="cars.json: no annotation has a segmentation"):
        checks.check_model_for_data("cars.json", "maskrcnn", True, False, car)
    spec = dict(model_spec=dict(model="maskrcnn", classes=[dict(id=1, name="pedestrian")]))
    with pytest.raises(TutorialError, match=r"c.pth was trained on the classes \['pedestrian'\], but cars.json has"):
        checks.check_model_for_data("cars.json", "maskrcnn", False, False, car, spec, "c.pth")


def test_the_task_and_its_weights_file():
    """What the flags ask for (flags.Task), and the file a run reads: --resume, else --weights FILE."""
    assert settings.task(parse()).training and not settings.task(parse("--test-only")).training
    assert not settings.task(parse("--export", "m.onnx", "--weights", "c.pth")).training
    assert [pretrained.weights_file(w) for w in ("DEFAULT", "none", "None", None, "c.pth")] == [None] * 4 + ["c.pth"]
    assert pretrained.weights_file("DEFAULT", "r.pth") == pretrained.weights_file("c.pth", "r.pth") == "r.pth"
    assert pretrained.is_random_init("none") and not pretrained.is_random_init("DEFAULT")
    assert flags.combination_error(settings.task(parse("--predict", "a.png", "--test-only")), 2, 800, 1333) == \
        "--test-only and --predict: choose one"


def test_maskrcnn_resnet18_is_one_network_with_or_without_the_demo():
    classes = [dict(id=1, name="pedestrian")]
    nets = [tv_training.build_model("maskrcnn_resnet18", "none", classes, torch.device("cpu"), min_size=64,
                                    max_size=96, demo_settings=demo_settings)[0] for demo_settings in (False, True)]
    for net in nets:
        assert not hasattr(net.backbone.body, "layer4")
        assert len(net.roi_heads.mask_head) == small_maskrcnn.DEMO_SMALL_MODEL["mask_head_convs"]
    assert [p.shape for p in nets[0].backbone.parameters()] == [p.shape for p in nets[1].backbone.parameters()]
