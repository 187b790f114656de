"""run_settings.py: the run's settings settled once, in the stated order (flags, the demo's recipe,
a checkpoint's, the box-only fallback), on a copy of the parsed arguments; the checks only raise or warn."""

import copy

import pytest
import torch

import tv_training
from finetune.errors import DatasetError, TutorialError
from finetune.models import small_maskrcnn
from finetune.run import checks, demo, settings


def parse(*argv):
    return tv_training.get_args_parser().parse_args(list(argv))


def settle(args, checkpoint=None):
    return settings.settle(args, tv_training.get_args_parser(add_help=False), lambda path: checkpoint)


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
    checks.check_run(args, None, None, lambda path: None, training=False)
    assert checks.check_model_for_data(args, False, [dict(id=1, name="car")]) == "box-only"
    assert vars(args) == before


def test_maskrcnn_resnet18_is_one_network_with_or_without_the_demo():
    classes = [dict(id=1, name="pedestrian")]
    nets = [tv_training.build_model("maskrcnn_resnet18", "none", classes, torch.device("cpu"), min_size=64,
                                    max_size=96, demo_settings=demo_settings)[0] for demo_settings in (False, True)]
    for net in nets:
        assert not hasattr(net.backbone.body, "layer4")
        assert len(net.roi_heads.mask_head) == small_maskrcnn.DEMO_SMALL_MODEL["mask_head_convs"]
    assert [p.shape for p in nets[0].backbone.parameters()] == [p.shape for p in nets[1].backbone.parameters()]
