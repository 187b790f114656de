"""main() end to end on tiny synthetic data: metrics, outputs, checkpoints, resume, predict."""

import errno
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision.models.detection.roi_heads as roi_heads
from conftest import LOSS_TERMS, ROOT_DIR, run_main, tiny_argv
from PIL import Image
from pycocotools import mask as mask_util
from test_arguments import cli

import tv_training
from finetune import hardware
from finetune.data import loaders
from finetune.errors import TrainingInterrupted, TutorialError
from finetune.outputs import metrics
from finetune.run import checkpoints, demo, interrupts, optim, settings
from finetune.speedups import inference

# the runs here: --demo (random init and the demo's small RPN/RoI settings) for two epochs at a
# lower learning rate; the explicit flags win over the demo's values
RECIPE = dict(epochs=2, weights="none", lr="3e-4")


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory):
    """One uninterrupted 2-epoch run, shared by the tests below."""
    out = str(tmp_path_factory.mktemp("full"))
    return run_main(*tiny_argv(data, out, **RECIPE)), out


def test_parser_defaults_are_the_tutorials():
    parser = tv_training.get_args_parser()
    args = parser.parse_args([])
    expected = dict(data_path="data/PennFudanPed", model="maskrcnn", weights="DEFAULT", batch_size=2, epochs=2,
                    workers=4, opt="sgd", lr=0.005, momentum=0.9, weight_decay=0.0005, lr_scheduler="steplr",
                    lr_step_size=3, lr_gamma=0.1, print_freq=10, test_size=50, train_size=None, min_size=800,
                    max_size=1333, amp=False, demo=False, aspect_ratio_group_factor=-1)
    assert {k: getattr(args, k) for k in expected} == expected
    for action in parser._actions:
        if action.dest != "help":
            assert action.help, f"{action.dest} has no help text"
    assert parser.format_help().count("(default:") == len(parser._actions) - 1


def test_demo_recipe_replaces_only_flags_left_at_their_defaults():
    parser = tv_training.get_args_parser()
    args = settings.apply_demo_recipe(parser.parse_args(["--demo", "--lr", "0.01"]))
    assert args.lr == 0.01  # explicit wins
    assert args.weights == "none" and args.opt == "adamw" and args.data_path == "data/SyntheticPed"
    assert args.epochs == demo.DEMO_RECIPE["epochs"]
    # a flag typed with the tutorial's value is still explicit
    args = settings.apply_demo_recipe(parser.parse_args(["--demo", "--epochs", "2"]))
    assert args.epochs == 2 and args.explicit == ["demo", "epochs"]
    # the demo trains the small Mask R-CNN unless a model is named
    assert args.model == "maskrcnn_resnet18"
    args = settings.apply_demo_recipe(parser.parse_args(["--demo", "--model", "maskrcnn"]))
    assert args.model == "maskrcnn" and args.opt == "adamw"


@pytest.mark.parametrize("has_bf16", [True, False])
def test_demo_trains_in_bfloat16_on_a_cpu_that_has_it(has_bf16, monkeypatch):
    """--demo turns --amp on for a CPU with bf16 instructions only; a typed --amp/--no-amp wins,
    and a CUDA device keeps float32."""

    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: has_bf16)
    parser = tv_training.get_args_parser()
    assert settings.apply_demo_recipe(parser.parse_args(["--demo", "--device", "cpu"])).amp is has_bf16
    assert settings.apply_demo_recipe(parser.parse_args(["--demo", "--device", "cpu", "--no-amp"])).amp is False
    assert settings.apply_demo_recipe(parser.parse_args(["--demo", "--device", "cpu", "--amp"])).amp is True
    assert settings.apply_demo_recipe(parser.parse_args(["--demo", "--device", "cuda"])).amp is False
    assert parser.parse_args(["--device", "cpu"]).amp is False  # without --demo: the tutorial's float32


def test_main_with_the_tutorials_model(data, tmp_path):
    """The tutorial's ResNet-50 Mask R-CNN through main(): train, evaluate, checkpoint, reload."""
    out = str(tmp_path / "r50")
    result = run_main(*tiny_argv(data, out, "--model", "maskrcnn", "--epochs", "1", **RECIPE))
    (record,) = result["records"]
    assert set(record["train"]) == LOSS_TERMS and all(np.isfinite(v) for v in record["train"].values())
    assert list(result["segm"]) == metrics.COCO_STAT_NAMES
    ckpt = torch.load(os.path.join(out, "checkpoint.pth"), weights_only=True)
    assert ckpt["args"]["model"] == "maskrcnn"
    assert any(k.startswith("backbone.body.layer4.2.") for k in ckpt["model"])  # ResNet-50: 3 blocks in layer4
    again = run_main(*tiny_argv(data, "", "--test-only", "--weights", os.path.join(out, "checkpoint.pth"), **RECIPE))
    assert again["bbox"] == pytest.approx(result["bbox"], abs=1e-6)


def test_main_end_to_end(full_run, capsys):
    result, out = full_run
    records = result["records"]
    for iou in ("bbox", "segm"):
        assert list(result[iou]) == metrics.COCO_STAT_NAMES
        assert result[iou] == records[-1][iou]  # main returns the last epoch's numbers
        stats = result[iou]  # named in pycocotools' order: AP50 >= AP (over IoU .5:.95), AR100 >= AR10 >= AR1
        assert stats["AP50"] >= stats["AP"] and stats["AR100"] >= stats["AR10"] >= stats["AR1"]
    assert [r["epoch"] for r in records] == [0, 1]
    for r in records:
        assert set(r["train"]) == LOSS_TERMS and all(np.isfinite(v) for v in r["train"].values())
        assert len(r["iteration_losses"]) == 2  # 4 training images, batch 2
        assert r["lr"] > 0 and r["epoch_time_s"] > 0
    # files people look at
    for name in ("checkpoint.pth", "metrics.json", "curves.png", "preview.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    assert json.load(open(os.path.join(out, "metrics.json"))) == json.loads(json.dumps(records))
    figures = os.listdir(os.path.join(out, "predictions"))
    assert len(figures) == 2 and all(f.endswith(".png") for f in figures)
    assert Image.open(os.path.join(out, "curves.png")).size == (1100, 400)
    # the checkpoint loads without unpickling code and holds the whole training state
    ckpt = torch.load(os.path.join(out, "checkpoint.pth"), weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "epoch", "args", "records", "model_spec"} <= set(ckpt)
    assert ckpt["epoch"] == 1 and ckpt["args"]["seed"] == 0 and isinstance(ckpt["args"], dict)
    assert not [f for f in os.listdir(out) if f.startswith(".tmp")]


def test_printed_output_follows_the_tutorial(data, tmp_path, capsys):
    run_main(*tiny_argv(data, "", "--epochs", "1", **RECIPE))
    text = capsys.readouterr().out
    assert "Epoch: [0]  [0/2]  eta: " in text and "Epoch: [0] Total time: " in text
    assert "Test:  [0/2]" in text and "Averaged stats: model_time: " in text
    assert "IoU metric: bbox" in text and "IoU metric: segm" in text
    assert text.rstrip().endswith("That's it!")  # --output-dir '': nothing written after


class Draws(torch.utils.data.Dataset):
    """Each item a random number drawn where the loader fetches it (as a random flip is)."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.rand(1), i


def epoch_draws(loader, shuffle_gen, seed, epoch):
    torch.manual_seed(seed + epoch)  # as train() seeds each epoch
    shuffle_gen.manual_seed(seed + epoch)
    return [(float(x), i) for draws, index in loader for x, i in zip(draws, index)]


def test_an_output_folder_that_fills_up_mid_run_is_one_line(data, tmp_path, monkeypatch, capsys):


    real = checkpoints.save_checkpoint

    def disk_full_at_the_second_epoch(path, *args, **kwargs):
        if os.path.exists(path):
            raise OSError(errno.ENOSPC, "No space left on device", path + ".tmp")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(checkpoints, "save_checkpoint", disk_full_at_the_second_epoch)
    out = tmp_path / "run"
    code, _, err = cli(tiny_argv(data, str(out), epochs=2), capsys)
    ckpt = out / "checkpoint.pth"
    assert code == 1 and err.strip() == (f"error: {ckpt}.tmp: cannot be written (No space left on device); the last "
                                         f"complete epoch is in {ckpt} (--resume {ckpt} once it is fixed)")
    assert torch.load(ckpt, weights_only=True)["epoch"] == 0


def test_loader_workers_draw_per_epoch_so_a_resumed_run_repeats():
    train, _, _, gen = loaders.make_loaders(Draws(), Draws(), 2, 1, False, 0, -1)
    full = [epoch_draws(train, gen, 0, epoch) for epoch in range(2)]
    train, _, _, gen = loaders.make_loaders(Draws(), Draws(), 2, 1, False, 0, -1)  # a new process
    assert epoch_draws(train, gen, 0, 1) == full[1] != full[0]  # resumed at epoch 1


def test_interrupt_then_resume_matches_the_uninterrupted_run(full_run, data, tmp_path, monkeypatch):
    expected, _ = full_run
    out = str(tmp_path / "run")
    real_train = tv_training.train_one_epoch

    def interrupted_at_epoch_1(*args, **kwargs):
        if args[4] == 1:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(tv_training, "train_one_epoch", interrupted_at_epoch_1)
    stopped = r"interrupted: epoch 0 is the last complete one, saved in"
    with pytest.raises(TrainingInterrupted, match=stopped) as info:
        run_main(*tiny_argv(data, out, **RECIPE))
    assert info.value.checkpoint == os.path.join(out, "checkpoint.pth")
    assert torch.load(os.path.join(out, "checkpoint.pth"), weights_only=True)["epoch"] == 0
    monkeypatch.setattr(tv_training, "train_one_epoch", real_train)

    resumed = run_main(*tiny_argv(data, out, "--resume", os.path.join(out, "checkpoint.pth"), **RECIPE))
    assert [r["epoch"] for r in resumed["records"]] == [0, 1]
    for got, want in zip(resumed["records"], expected["records"]):
        assert got["iteration_losses"] == pytest.approx(want["iteration_losses"], rel=1e-5)
        assert got["lr"] == pytest.approx(want["lr"])
    for iou in ("bbox", "segm"):
        assert resumed[iou] == pytest.approx(expected[iou], abs=1e-6)


@pytest.mark.parametrize("flag", ["--resume", "--weights"])
def test_test_only_reproduces_the_last_evaluation(full_run, data, flag, capsys):
    expected, out = full_run
    got = run_main(*tiny_argv(data, "", "--test-only", flag, os.path.join(out, "checkpoint.pth"), **RECIPE))
    assert "IoU metric: bbox" in capsys.readouterr().out
    for iou in ("bbox", "segm"):
        assert got[iou] == pytest.approx(expected[iou], abs=1e-6)


def test_eval_bf16_evaluates_with_the_bfloat16_backbone(full_run, data, monkeypatch):
    """--test-only --eval-bf16 evaluates inside inference.bfloat16_backbone (on the CPU), with COCO
    numbers close to float32's; without the flag the block is a no-op."""

    expected, out = full_run
    seen, plain = [], inference.bfloat16_backbone

    def recording(model, enabled=True):
        seen.append(enabled)
        return plain(model, enabled)

    monkeypatch.setattr(inference, "bfloat16_backbone", recording)
    got = run_main(*tiny_argv(data, "", "--test-only", "--weights", os.path.join(out, "checkpoint.pth"), "--eval-bf16",
                              **RECIPE))
    assert seen == [True]
    for iou in ("bbox", "segm"):
        assert got[iou]["AP50"] == pytest.approx(expected[iou]["AP50"], abs=0.05)
    run_main(*tiny_argv(data, "", "--test-only", "--weights", os.path.join(out, "checkpoint.pth"), **RECIPE))
    assert seen == [True, False]


def test_on_an_avx2_cpu_training_is_nchw_and_evaluation_channels_last(data, tmp_path, monkeypatch):
    """--channels-last auto on a CPU without AVX-512: each epoch trains in NCHW and evaluates in
    channels_last (what measured faster there: docs/speed.md), and the checkpoint is the same
    either way."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    seen = []

    def layout(model):
        model = getattr(model, "module", model)
        return "channels_last" if model.backbone.body.conv1.weight.is_contiguous(
            memory_format=torch.channels_last) else "nchw"

    def recording(name, function):
        def wrapper(model, *args, **kwargs):
            seen.append((name, layout(model)))
            return function(model, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(tv_training, "train_one_epoch", recording("train", tv_training.train_one_epoch))
    monkeypatch.setattr(tv_training, "evaluate", recording("evaluate", tv_training.evaluate))
    out = str(tmp_path / "run")
    run_main(*tiny_argv(data, out, epochs=2), quiet=True)
    assert seen == [("train", "nchw"), ("evaluate", "channels_last")] * 2
    state = torch.load(os.path.join(out, "checkpoint.pth"), weights_only=True)["model"]
    assert state["backbone.body.conv1.weight"].is_contiguous()
    seen.clear()
    run_main(*tiny_argv(data, "", "--test-only", "--weights", os.path.join(out, "checkpoint.pth")), quiet=True)
    assert seen == [("evaluate", "channels_last")]


def test_predict_writes_overlays_and_detections(full_run, data, tmp_path):
    _, out = full_run
    images = os.path.join(data, "PNGImages")
    # no --demo, no sizes: the checkpoint's model_spec says how to build the model
    res = run_main("--predict", images, "--weights", os.path.join(out, "checkpoint.pth"),
                   "--output-dir", str(tmp_path), "--score-threshold", "0")
    pred_dir = tmp_path / "predict"
    assert len(res["predictions"]) == 6
    first = json.load(open(pred_dir / "SynthPed00001.png.json"))
    im = Image.open(os.path.join(images, "SynthPed00001.png"))
    assert (first["width"], first["height"]) == im.size and first["score_threshold"] == 0
    assert first["detections"], "score threshold 0 keeps every detection"
    for det in first["detections"]:
        x1, y1, x2, y2 = det["box_xyxy"]
        assert 0 <= x1 <= x2 <= im.width and 0 <= y1 <= y2 <= im.height
        assert 0 <= det["score"] <= 1 and det["label"] == 1
        mask = mask_util.decode({"size": det["mask_rle"]["size"], "counts": det["mask_rle"]["counts"].encode()})
        assert mask.shape == (im.height, im.width)
    assert Image.open(pred_dir / "SynthPed00001.png.png").size == im.size


def test_predict_needs_a_weights_file(tmp_path):
    with pytest.raises(tv_training.TutorialError, match="--predict needs trained weights"):
        run_main("--predict", str(tmp_path), "--weights", "none")
    with pytest.raises(tv_training.TutorialError, match="no such weights file"):
        run_main("--predict", str(tmp_path), "--weights", str(tmp_path / "missing.pth"))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(full_run, data, tmp_path, monkeypatch):
    _, out = full_run
    run_dir = tmp_path / "nan"
    run_dir.mkdir()
    good = torch.load(os.path.join(out, "checkpoint.pth"), weights_only=True)
    good["epoch"] = 0  # pretend epoch 0 just finished; epoch 1 will blow up
    torch.save(good, run_dir / "checkpoint.pth")

    real_loss = roi_heads.fastrcnn_loss

    def nan_classifier_loss(*args):
        cls, box = real_loss(*args)
        return cls * float("nan"), box

    monkeypatch.setattr(roi_heads, "fastrcnn_loss", nan_classifier_loss)
    with pytest.raises(tv_training.TutorialError) as info:
        run_main(*tiny_argv(data, str(run_dir), "--resume", str(run_dir / "checkpoint.pth"), **RECIPE))
    message = str(info.value)
    assert "loss_classifier=nan" in message and "epoch 1, iteration 0/2" in message
    assert f"the last good checkpoint is {run_dir / 'checkpoint.pth'}" in message
    assert torch.load(run_dir / "checkpoint.pth", weights_only=True)["epoch"] == 0


def test_check_forward(data, capsys):
    res = run_main(*tiny_argv(data, "", "--check-forward", **RECIPE))
    assert set(res["losses"]) == LOSS_TERMS - {"loss"}
    assert all(np.isfinite(v) for v in res["losses"].values())
    assert "'boxes'" in capsys.readouterr().out


def test_restored_optimizer_buffers_take_their_parameters_layout():
    """A checkpoint written with channels_last parameters (the CPU default) resumes into NCHW ones
    (as on CUDA): fused AdamW there needs buffers laid out like their parameters."""

    def model_and_optimizer(memory_format):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 4, 1)).to(memory_format=memory_format)
        optimizer = optim.make_optimizer(model, "adamw", 1e-3, 0.0, 1e-4)
        return model, optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 2)

    x = torch.rand(2, 3, 9, 9)
    model, optimizer, scheduler = model_and_optimizer(torch.channels_last)
    model(x).sum().backward()
    optimizer.step()
    saved = dict(optimizer=optimizer.state_dict(), lr_scheduler=scheduler.state_dict(), epoch=0)
    assert not optimizer.state[model[0].weight]["exp_avg"].is_contiguous()  # channels_last buffers
    model, optimizer, scheduler = model_and_optimizer(torch.contiguous_format)
    checkpoints.restore_training_state(saved, optimizer, scheduler, None)
    for index, param in enumerate(model.parameters()):
        for key in ("exp_avg", "exp_avg_sq"):
            buffer = optimizer.state[param][key]
            assert buffer.stride() == param.stride() and torch.equal(buffer, saved["optimizer"]["state"][index][key])
    model(x).sum().backward()
    optimizer.step()


def test_resume_command_under_torchrun_names_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    assert interrupts.resume_command(["--demo"], "c.pth") == \
        "torchrun --nproc_per_node=2 tv_training.py --demo --resume c.pth"


def test_resume_command_replaces_an_earlier_resume(monkeypatch):
    monkeypatch.setattr(interrupts, "python_command", lambda: "python")
    cmd = interrupts.resume_command(["--demo", "--resume", "old.pth", "--resume=x", "--lr", "1e-3"], "out/c.pth")
    assert cmd == "python tv_training.py --demo --lr 1e-3 --resume out/c.pth"
    assert interrupts.resume_command(["--data-path", "my data"], "c.pth") == \
        "python tv_training.py --data-path 'my data' --resume c.pth"


def test_printed_commands_name_the_interpreter_that_ran(monkeypatch, tmp_path):
    """README's `.venv/bin/python tv_training.py` gets `.venv/bin/python` in its resume and report
    commands, not a `python` that may be another environment's; the python on PATH is `python`."""
    venv = tmp_path / "project" / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(sys.executable)  # as venv makes it: a link to the system's python
    system = tmp_path / "usr" / "bin"
    system.mkdir(parents=True)
    (system / "python").symlink_to(sys.executable)
    monkeypatch.chdir(tmp_path / "project")
    monkeypatch.setenv("PATH", str(system))
    monkeypatch.setattr(sys, "executable", str(venv / "python"))
    assert interrupts.resume_command(["--demo"], "c.pth") == ".venv/bin/python tv_training.py --demo --resume c.pth"
    assert interrupts.report_command(["--demo"], "c.pth").startswith(".venv/bin/python tv_training.py --demo")
    monkeypatch.setenv("PATH", f"{venv}{os.pathsep}{system}")  # the venv activated
    assert interrupts.python_command() == "python"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(system))
    monkeypatch.setattr(sys, "executable", str(venv / "python"))
    assert interrupts.python_command() == os.path.join("project", ".venv", "bin", "python")
    monkeypatch.chdir(system)  # outside the working folder: the whole path
    assert interrupts.python_command() == str(venv / "python")


def test_nothing_runs_at_import():
    """Importing any module prints nothing, starts no thread and leaves the environment alone."""
    package = sorted(os.path.relpath(p, ROOT_DIR)[:-3].replace(os.sep, ".").removesuffix(".__init__")
                     for p in glob.glob(os.path.join(ROOT_DIR, "finetune", "**", "*.py"), recursive=True))
    modules = ", ".join(["tv_training", "engine", "utils", "coco_utils", "coco_eval", "transforms",
                         "group_by_aspect_ratio"] + package)
    code = (f"import os, threading; before = dict(os.environ); import {modules}; "
            "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items()); "
            "assert threading.active_count() == 1, threading.enumerate()")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT_DIR, env=env,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr



def test_main_with_fasterrcnn_mobilenet_v3_trains_and_rebuilds_from_its_checkpoint(data, tmp_path):
    """--model fasterrcnn_mobilenet_v3 --weights none end to end: boxes only, and --test-only rebuilds it
    from the checkpoint without --model."""
    out = str(tmp_path / "mnv3")
    result = run_main(*tiny_argv(data, out, "--model", "fasterrcnn_mobilenet_v3", "--epochs", "1", **RECIPE))
    assert "segm" not in result and list(result["bbox"]) == metrics.COCO_STAT_NAMES
    ckpt = torch.load(os.path.join(out, "checkpoint.pth"), weights_only=True)
    assert ckpt["model_spec"]["model"] == "fasterrcnn_mobilenet_v3"
    again = run_main(*tiny_argv(data, "", "--test-only", "--weights", os.path.join(out, "checkpoint.pth"), **RECIPE))
    assert again["bbox"] == pytest.approx(result["bbox"], abs=1e-6)
    resumed = run_main(*tiny_argv(data, out, "--resume", os.path.join(out, "checkpoint.pth"), **RECIPE))
    assert [r["epoch"] for r in resumed["records"]] == [0, 1]
    assert torch.load(os.path.join(out, "checkpoint.pth"), weights_only=True)["model_spec"]["model"] == \
        "fasterrcnn_mobilenet_v3"


@pytest.mark.parametrize("flags,words", [
    (["--model", "maskrcnn_v2", "--weights", "MaskRCNN_ResNet50_FPN_Weights.COCO_V1"],
     "MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1"),
    (["--model", "fasterrcnn_mobilenet_v3", "--trainable-backbone-layers", "7"], "0 to 6"),
    (["--model", "mobilenet", "--weights-backbone", "ResNet50_Weights.IMAGENET1K_V1"], "no separate backbone"),
    (["--model", "maskrcnn", "--weights", "none", "--weights-backbone", "garbage"],
     "garbage is not a torchvision weight enum; --model maskrcnn takes ResNet50_Weights.IMAGENET1K_V1")])
def test_model_flag_errors_are_one_usage_line(data, tmp_path, capsys, flags, words):
    code, _, err = cli(tiny_argv(data, str(tmp_path / "x"), *flags), capsys)
    assert code == 2 and words in err.strip().splitlines()[-1]
    assert not os.path.exists(tmp_path / "x")  # refused before anything ran


def test_weights_flags_are_checked_again_with_the_demo_recipe_and_in_main(data, tmp_path, capsys):
    """--demo trains from --weights none, so --trainable-backbone-layers is refused there too (cli checked
    the typed flags before the demo's values); ``main(args)`` called without cli refuses a bad enum in one line."""
    code, _, err = cli(tiny_argv(data, str(tmp_path / "x"), "--model", "maskrcnn", "--trainable-backbone-layers",
                                 "2"), capsys)
    assert code == 1 and "every layer trains" in err and "--demo trains from --weights none" in err
    with pytest.raises(TutorialError, match="MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1"):
        run_main(*tiny_argv(data, str(tmp_path / "y"), "--model", "maskrcnn_v2", "--weights",
                            "MaskRCNN_ResNet50_FPN_Weights.COCO_V1"))
    assert not os.path.exists(tmp_path / "x") and not os.path.exists(tmp_path / "y")
