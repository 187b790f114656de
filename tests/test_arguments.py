"""Bad command lines end in one clear line before any work, and --predict loses no output.

Each row of the "Bad arguments" table in docs/bad-input.md: the exit status, no traceback, and the words.
"""

import argparse
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT_DIR, build, make_data, run_main, tiny_argv
from PIL import Image

import tv_training
from finetune import hardware
from finetune.data import formats, synthetic
from finetune.models import pretrained
from finetune.outputs import writing
from finetune.run import settings

DATA_SEED = 4  # the images of the conftest ``data`` fixture


def cli(argv, capsys):
    """Run the command line in this process; returns (exit status, stdout, stderr)."""
    handler = signal.getsignal(signal.SIGINT)  # cli ignores Ctrl-C once a run is interrupted
    try:
        tv_training.cli(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        signal.signal(signal.SIGINT, handler)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A finished one-epoch demo run: its output folder."""
    out = str(tmp_path_factory.mktemp("trained") / "run")
    run_main(*tiny_argv(data, out))
    return out


@pytest.mark.parametrize("argv, words", [
    (["-b", "0"], "argument -b/--batch-size: expected an integer >= 1, got '0'"),
    (["--lr", "-1"], "argument --lr: expected a finite number > 0, got '-1'"),
    (["--lr", "nan"], "argument --lr: expected a finite number > 0, got 'nan'"),
    (["--lr", "inf"], "argument --lr: expected a finite number > 0, got 'inf'"),
    (["--lr", "1e400"], "argument --lr: expected a finite number > 0, got '1e400'"),
    (["--seed", "99999999999999999999"], "argument --seed: expected an integer from 0 to 4294967295"),
    (["--seed", "-1"], "argument --seed: expected an integer from 0 to 4294967295, got '-1'"),
    (["--seed", "9" * 400], "argument --seed: expected an integer from 0 to 4294967295"),  # beyond float range
    (["--print-freq", "0"], "argument --print-freq: expected an integer >= 1, got '0'"),
    (["-j", "-1"], "argument -j/--workers: expected an integer >= 0, got '-1'"),
    (["--epochs", "-1"], "argument --epochs: expected an integer >= 0, got '-1'"),
    (["--epochs", "0"], "argument --epochs: 0 trains nothing"),
    (["--wd", "-0.1"], "argument --wd/--weight-decay: expected a finite number >= 0"),
    (["--wd", "inf"], "argument --wd/--weight-decay: expected a finite number >= 0, got 'inf'"),
    (["--score-threshold", "2"], "argument --score-threshold: expected a finite number from 0 to 1, got '2'"),
    (["--test-size", "-3"], "argument --test-size: expected an integer >= 0"),
    (["--train-size", "0"], "argument --train-size: expected an integer >= 1"),
    (["--min-size", "900", "--max-size", "800"], "argument --max-size: 800 is below --min-size 900"),
    (["--device", "gpu0"], "argument --device: expected auto, cpu, mps, cuda or cuda:N, got 'gpu0'"),
    (["--aspect-ratio-group-factor", "-2"], "argument --aspect-ratio-group-factor: expected an integer >= -1"),
    # an unset shell variable ("$OUT") would otherwise read as the flag left out: a training run
    (["--export", ""], "argument --export: an empty path (an unset shell variable?)"),
    (["--resume", " "], "argument --resume: an empty path"),
    (["--weights", ""], "argument --weights: an empty path"),
    (["--predict", "photos", ""], "argument --predict: an empty path"),
])
def test_bad_flag_values_are_usage_errors_before_any_work(argv, words, tmp_path, capsys):
    data_path = str(tmp_path / "never_made")
    code, out, err = cli(["--demo", "--data-path", data_path, "--output-dir", str(tmp_path / "out"), *argv], capsys)
    assert code == 2 and words in err and "Traceback" not in err
    assert not os.path.exists(data_path) and not os.path.exists(tmp_path / "out")  # nothing generated or made


def test_bad_flag_in_a_real_process_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT_DIR, "tv_training.py"), "-b", "0"],
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith("argument -b/--batch-size: expected an integer >= 1, got '0'")


def test_test_only_scores_the_checkpoints_own_test_split(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no data/PennFudanPed here: the checkpoint says where its data is
    ckpt = os.path.join(trained, "checkpoint.pth")
    again = run_main("--test-only", "--weights", ckpt, "--output-dir", "", "-j", "0")
    last = torch.load(ckpt, weights_only=True)["records"][-1]
    assert again["bbox"] == pytest.approx(last["bbox"], abs=1e-6)  # the same test images: its seed and --test-size
    taken = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(f"From {ckpt}: "))
    assert "--test-size 2" in taken and "--data-path" in taken
    assert os.listdir(tmp_path) == []  # nothing downloaded or made here


def test_epochs_0_is_fine_for_evaluation(trained, data, capsys):
    code, out, err = cli(tiny_argv(data, "", "--epochs", "0", "--test-only", "--weights",
                                   os.path.join(trained, "checkpoint.pth")), capsys)
    assert code == 0 and "IoU metric: bbox" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_says_so(data, tmp_path, capsys):
    code, out, err = cli(tiny_argv(data, str(tmp_path / "o"), "--device", "cuda"), capsys)
    assert code == 1 and err.startswith("error: --device cuda: no CUDA GPU is available here") and "--device cpu" in err
    assert not os.path.exists(tmp_path / "o")


def test_cuda_index_beyond_the_gpus(data, tmp_path, capsys):
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    code, out, err = cli(tiny_argv(data, str(tmp_path / "o"), "--device", f"cuda:{count}"), capsys)
    assert code == 1 and f"--device cuda:{count}" in err and "Traceback" not in err


def test_output_dir_that_cannot_be_made(data, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, out, err = cli(tiny_argv(data, str(blocker / "sub")), capsys)
    assert code == 1 and err.startswith(f"error: --output-dir {blocker / 'sub'}: cannot be created or written")
    assert len(err.strip().splitlines()) == 1


def test_test_size_0_trains_on_everything_without_evaluation(data, tmp_path, capsys):
    out = str(tmp_path / "all")
    result = run_main(*tiny_argv(data, out, "--test-size", "0"))
    printed = capsys.readouterr().out
    assert printed.count("--test-size 0: training on every image") == 1
    (record,) = result["records"]
    assert "bbox" not in record and "segm" not in record and len(record["iteration_losses"]) == 3  # 6 images
    assert "IoU metric" not in printed and not os.path.exists(os.path.join(out, "predictions"))
    assert os.path.exists(os.path.join(out, "checkpoint.pth")) and os.path.exists(os.path.join(out, "curves.png"))


def test_a_second_run_never_overwrites_the_first(trained, data, capsys):
    before = os.path.getmtime(os.path.join(trained, "checkpoint.pth"))
    code, out, err = cli(tiny_argv(data, trained), capsys)
    assert code == 1 and "Traceback" not in err
    ckpt = os.path.join(trained, "checkpoint.pth")
    assert f"{trained}/ already holds a run (epoch 0 of 1" in err and "bbox AP" in err
    assert f"--resume {ckpt}" in err and "another --output-dir" in err and "--overwrite" in err
    assert os.path.getmtime(ckpt) == before
    # continuing it is fine: the run is complete, so it says so instead of saving again
    code, out, err = cli(tiny_argv(data, trained, "--resume", ckpt), capsys)
    assert code == 0 and "finished at epoch 0; raise --epochs to continue" in out
    assert os.path.getmtime(ckpt) == before


def test_overwrite_replaces_the_run(data, tmp_path, capsys):
    out = str(tmp_path / "run")
    argv = tiny_argv(data, out)
    assert cli(argv, capsys)[0] == 0
    first = torch.load(os.path.join(out, "checkpoint.pth"), weights_only=True)
    first_report = open(os.path.join(out, "report", "report.html")).read()
    code, printed, err = cli(argv + ["--overwrite", "--seed", "5"], capsys)
    assert code == 0
    seed = torch.load(os.path.join(out, "checkpoint.pth"), weights_only=True)["args"]["seed"]
    assert seed == 5 != first["args"]["seed"]
    # the replaced run's report is the one earlier report (no empty snapshot of a report/ it emptied)
    (earlier,) = os.listdir(os.path.join(out, "report", "earlier"))
    assert open(os.path.join(out, "report", "earlier", earlier, "report.html")).read() == first_report


def test_resume_takes_the_checkpoints_recipe(trained, data, tmp_path, capsys):
    """A --demo checkpoint resumed without --demo continues the same run (AdamW, the small model)."""
    ckpt = os.path.join(trained, "checkpoint.pth")
    out = str(tmp_path / "continued")
    argv = ["--resume", ckpt, "--output-dir", out, "--epochs", "2", "-j", "0", "--print-freq", "1"]
    result = run_main(*argv)
    printed = capsys.readouterr().out
    line = next(x for x in printed.splitlines() if x.startswith(f"From {ckpt}: "))
    for taken in ("--model maskrcnn_resnet18", "--demo", "--opt adamw", "--min-size 64", f"--data-path {data}"):
        assert taken in line
    assert [r["epoch"] for r in result["records"]] == [0, 1]


def test_resume_without_output_dir_continues_in_the_runs_own_folder(data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --output-dir, "output", would be here
    out = str(tmp_path / "runs" / "a")
    run_main(*tiny_argv(data, out))
    ckpt = os.path.join(out, "checkpoint.pth")
    run_main("--resume", ckpt, "--epochs", "2")
    printed = capsys.readouterr().out
    assert f"--output-dir {out}" in printed
    taken = next(x for x in printed.splitlines() if x.startswith(f"From {ckpt}: "))
    assert "--workers 0" in taken  # -j too: each loader worker draws its own random flips
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1 and not (tmp_path / "output").exists()


def test_a_run_on_relative_paths_resumes_from_another_folder_and_moved_whole(tmp_path, capsys, monkeypatch):
    """The checkpoint keeps the data's path as typed and the folder it was typed in: resumed from
    another folder (which has a folder of the same name) the run's own data is read; in the project
    moved whole (data and run side by side), the moved data."""
    data = make_data(str(tmp_path / "project" / "SynthPed"))
    make_data(str(tmp_path / "SynthPed"), seed=1)  # another data set of the same name, beside the run
    monkeypatch.chdir(os.path.dirname(data))
    run_main(*tiny_argv(os.path.basename(data), str(tmp_path / "run")))
    ckpt = tmp_path / "run" / "checkpoint.pth"
    saved = torch.load(ckpt, weights_only=True)["args"]
    assert (saved["data_path"], saved["working_dir"]) == (os.path.basename(data), os.path.dirname(data))
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "run", moved / "run")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    resumed = run_main("--resume", "run/checkpoint.pth", "--epochs", "2")
    assert f"--data-path {data}" in capsys.readouterr().out
    assert [r["epoch"] for r in resumed["records"]] == [0, 1]
    shutil.move(data, moved / os.path.basename(data))  # the project's data moved with its first checkpoint
    monkeypatch.chdir(moved)
    run_main("--test-only", "--resume", "run/checkpoint.pth")
    assert f"--data-path {os.path.basename(data)}," in capsys.readouterr().out  # the moved data, read from here


@pytest.mark.parametrize("flag", [["--opt", "sgd"], ["--model", "maskrcnn"], ["--lr", "0.1"]])
def test_a_typed_flag_that_contradicts_the_checkpoint_is_an_error(trained, flag, tmp_path, capsys):
    ckpt = os.path.join(trained, "checkpoint.pth")
    code, out, err = cli(["--resume", ckpt, "--output-dir", str(tmp_path / "o"), "--epochs", "2", *flag], capsys)
    assert code == 1 and "Traceback" not in err
    assert f"error: {flag[0]} {flag[1]} contradicts {ckpt}, which was trained with {flag[0]} " in err


def test_resuming_on_data_that_changed_its_test_split_is_an_error(tmp_path, capsys):
    data = make_data(str(tmp_path / "data"), num_images=5)
    out = tmp_path / "run"
    run_main(*tiny_argv(data, str(out)))
    ckpt = out / "checkpoint.pth"
    first = sorted(os.listdir(os.path.join(data, "PNGImages")))[0]
    os.remove(os.path.join(data, "PNGImages", first))  # one image fewer: the seeded split reshuffles
    os.remove(os.path.join(data, "PedMasks", first.replace(".png", "_mask.png")))
    code, _, err = cli(["--resume", str(ckpt), "--epochs", "2"], capsys)
    assert code == 1 and err.strip().startswith(f"error: {data}: its test images are not those {ckpt} was tested on")
    assert torch.load(ckpt, weights_only=True)["epoch"] == 0


def test_a_flag_the_checkpoint_was_trained_without_is_named_so(trained, tmp_path, capsys):
    ckpt = os.path.join(trained, "checkpoint.pth")
    code, out, err = cli(["--resume", ckpt, "--output-dir", str(tmp_path / "o"), "--epochs", "2", "--train-size", "3"],
                         capsys)
    assert code == 1 and err.strip().startswith(f"error: --train-size 3 contradicts {ckpt}, which was trained without "
                                                f"--train-size. Drop --train-size ")


def test_a_typed_switch_that_contradicts_the_checkpoint_is_named_as_typed(trained, tmp_path, capsys):
    ckpt = os.path.join(trained, "checkpoint.pth")
    amp = torch.load(ckpt, weights_only=True)["args"]["amp"]  # --demo's choice for this CPU
    typed, trained_with = ("--no-amp", "--amp") if amp else ("--amp", "--no-amp")
    code, out, err = cli(["--resume", ckpt, "--output-dir", str(tmp_path / "o"), "--epochs", "2", typed], capsys)
    assert code == 1 and "Traceback" not in err
    assert f"error: {typed} contradicts {ckpt}, which was trained with {trained_with}. Drop {typed} " in err


def test_test_only_with_another_model_or_random_weights(trained, data, capsys):
    ckpt = os.path.join(trained, "checkpoint.pth")
    code, out, err = cli(tiny_argv(data, "", "--model", "fasterrcnn", "--test-only", "--weights", ckpt), capsys)
    assert code == 1 and "--model fasterrcnn contradicts" in err and "maskrcnn_resnet18" in err
    code, out, err = cli(tiny_argv(data, "", "--test-only", "--weights", "none"), capsys)
    assert code == 0 and "warning: --test-only with --weights none: the numbers are those of an untrained model" in out


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_weights_files_that_are_not_checkpoints(data, tmp_path, capsys):
    png = tmp_path / "photo.png"
    Image.new("RGB", (4, 4)).save(png)
    code_pickle = tmp_path / "model.pkl"
    with open(code_pickle, "wb") as f:
        pickle.dump({"model": np.zeros(3)}, f)  # numpy arrays need code to unpickle
    truncated = tmp_path / "cut.pth"
    torch.save({"model": {"w": torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    not_weights = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_weights)
    expected = {png: "a PNG image, not a checkpoint.", code_pickle: "a pickle that would run code when loaded",
                truncated: "a truncated or damaged file", not_weights: "holds a list, not a model's state dict"}
    for path, words in expected.items():
        code, out, err = cli(tiny_argv(data, "", "--test-only", "--weights", str(path)), capsys)
        assert code == 1 and "Traceback" not in err, err
        line = err.strip()
        assert line.startswith(f"error: {path}: {words}") and "\n" not in line, line
        assert line.endswith("Pass a checkpoint written by training (e.g. output/checkpoint.pth), or --weights "
                             "DEFAULT or none.")


def test_predict_over_a_mixed_folder_keeps_every_output(trained, data, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    src = Image.open(os.path.join(data, "PNGImages", "SynthPed00001.png"))
    src.convert("L").save(folder / "gray.png")
    src.convert("L").save(folder / "gray.jpg")
    src.save(folder / "street.webp")
    (folder / "notes.txt").write_text("not an image")
    (folder / "raw").mkdir()  # a subfolder: not searched, and said
    src.save(folder / "raw" / "deeper.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    out = tmp_path / "out"
    code, printed, err = cli(["--predict", str(folder), "--weights", os.path.join(trained, "checkpoint.pth"),
                              "--output-dir", str(out)], capsys)
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "error: 1 of 4 image(s) could not be read or predicted (listed above)"
    written = sorted(os.listdir(out / "predict"))
    assert written == ["gray.jpg.json", "gray.jpg.png", "gray.png.json", "gray.png.png", "images.json",
                       "results.json", "street.webp.json", "street.webp.png"]
    assert f"{folder / 'notes.txt'}: skipped (not an image PIL can read)" in printed
    assert f"{folder}{os.sep}: skipped (1 subfolder(s) not searched: raw; name them to predict on their images)" \
        in printed
    assert f"error: {folder / 'broken.png'}: cannot decode this image" in printed and "mask" not in printed
    assert f"-> {out / 'predict' / 'gray.jpg.png'}, {out / 'predict' / 'gray.jpg.json'}" in printed


def test_ctrl_c_during_predict_keeps_whole_files_and_says_what_is_missing(trained, data, tmp_path, capsys,
                                                                         monkeypatch):

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        shutil.copy(os.path.join(data, "PNGImages", "SynthPed00001.png"), folder / name)
    real_dump, calls = writing.json.dump, []

    def pressed_while_writing_the_second(obj, f, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            f.write('{"image": ')  # half a file when the press lands
            raise KeyboardInterrupt
        return real_dump(obj, f, **kwargs)

    monkeypatch.setattr(writing.json, "dump", pressed_while_writing_the_second)
    out = tmp_path / "out"
    code, printed, err = cli(["--predict", str(folder), "--weights", os.path.join(trained, "checkpoint.pth"),
                              "--output-dir", str(out)], capsys)
    assert code == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"interrupted: the images done so far have their .png and .json in {out / 'predict'} (each file whole); "
        "results.json, for all the images, was not written")
    assert sorted(os.listdir(out / "predict")) == ["a.png.json", "a.png.png"]  # no half-written b.png.json(.tmp)
    with open(out / "predict" / "a.png.json") as f:
        assert json.load(f)["image"] == str(folder / "a.png")


def test_ctrl_c_during_test_only_says_nothing_was_written(trained, data, capsys, monkeypatch):
    def pressed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tv_training, "evaluate", pressed)
    code, _, err = cli(["--test-only", "--data-path", data, "--test-size", "2",
                        "--resume", os.path.join(trained, "checkpoint.pth"), "--output-dir", ""], capsys)
    assert code == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "interrupted during evaluation: nothing was written"


@pytest.mark.parametrize("avx512_bf16, amx", [(False, False), (True, False), (False, True), (True, True)])
def test_cpu_has_bf16_follows_torchs_capability_checks(avx512_bf16, amx, monkeypatch):
    """AVX-512 BF16 or AMX, as torch detects them; a torch without those checks answers False."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert hardware.cpu_has_bf16() is (avx512_bf16 or amx)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert hardware.cpu_has_bf16() is amx
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert hardware.cpu_has_bf16() is False


@pytest.mark.parametrize("has_bf16", [False, True])
def test_bfloat16_flags_warn_on_a_cpu_without_bf16_instructions(has_bf16, monkeypatch, capsys):
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: has_bf16)
    parser = tv_training.get_args_parser()
    for argv, warning in ((["--amp"], "warning: --amp on a CPU without bfloat16 instructions"),
                          (["--eval-bf16", "--test-only"], "warning: --eval-bf16 on a CPU without bfloat16")):
        args = parser.parse_args(["--device", "cpu", "--output-dir", "", "--weights", "none", *argv])
        settings.check_run(args, None, None, pretrained.load_weights_file)
        printed = capsys.readouterr().out
        assert (warning in printed) is not has_bf16, printed


def test_test_size_is_ignored_with_a_test_file(tmp_path, capsys):
    train, val = synthetic.make_synthetic_coco(str(tmp_path / "c"), num_train=4, num_val=2, seed=0,
                                                    height_range=(64, 72), width_range=(64, 80))
    code, out, err = cli(["--demo", "--data-path", train, "--test-data-path", val, "--test-size", "3", "--epochs", "1",
                          "--min-size", "64", "--max-size", "96", "-j", "0", "--output-dir", ""], capsys)
    assert code == 0 and "warning: --test-size 3 is ignored: the test images are those of --test-data-path." in out


# --- what a user gets wrong loses nothing ----------------------------------------------------

def test_demo_never_writes_into_a_folder_of_other_files(data, tmp_path, capsys):
    own = tmp_path / "my_images"
    own.mkdir()
    (own / "photo.jpg").write_bytes(b"mine")
    code, out, err = cli(tiny_argv(str(own), str(tmp_path / "o")), capsys)
    assert code == 1 and "Traceback" not in err
    assert err.strip() == (f"error: {own}: a folder with other files and no PNGImages/, so --demo will not write its "
                           f"synthetic images there. For your own data pass its COCO file (--data-path FILE.json), "
                           f"labelme folder or YOLO data.yaml; for the demo, a new or empty --data-path.")
    assert os.listdir(own) == ["photo.jpg"]

    fresh = tmp_path / "fresh"
    (fresh / "run").mkdir(parents=True)  # what the checks make of --output-dir FRESH/run before the data step
    formats.prepare_data(str(fresh), make_data)
    assert sorted(os.listdir(fresh)) == ["PNGImages", "PedMasks", "run"]
    photo = str(own / "photo.jpg")
    for argv in (tiny_argv(photo, str(tmp_path / "o")),
                 ["--data-path", photo, "--weights", "none", "--output-dir", ""]):
        code, out, err = cli(argv, capsys)
        assert code == 1 and err.strip().startswith(f"error: {photo}: a file, not a dataset.")


def test_overwrite_keeps_the_earlier_run_when_the_new_one_fails_its_checks(data, tmp_path, capsys):
    out = str(tmp_path / "run")
    shutil.copytree(data, tmp_path / "data")
    assert cli(tiny_argv(str(tmp_path / "data"), out), capsys)[0] == 0
    before = {n: os.path.getmtime(os.path.join(out, n)) for n in os.listdir(out)}
    assert {"checkpoint.pth", "metrics.json", "curves.png", "preview.png"} <= set(before)
    code, _, err = cli(tiny_argv(str(tmp_path / "typo.json"), out, "--overwrite"), capsys)
    assert code == 1 and "typo.json: no such COCO file" in err
    os.remove(tmp_path / "data" / "PedMasks" / "SynthPed00002_mask.png")  # a dataset that fails its check
    code, _, err = cli(tiny_argv(str(tmp_path / "data"), out, "--overwrite"), capsys)
    assert code == 1 and "SynthPed00002_mask.png" in err
    assert {n: os.path.getmtime(os.path.join(out, n)) for n in os.listdir(out)} == before


def test_resume_needs_a_checkpoint_with_the_training_state(trained, tmp_path, capsys):
    best = os.path.join(trained, "best.pth")
    assert os.path.exists(best)
    code, out, err = cli(["--resume", best, "--epochs", "2", "--output-dir", str(tmp_path / "o")], capsys)
    assert code == 1 and "Traceback" not in err
    assert err.strip() == (f"error: --resume {best}: holds the model's weights but not the training state "
                           f"(optimizer), so a run cannot continue from it ({trained}/checkpoint.pth can). To train "
                           f"these weights further as a new run: --weights {best} with another --output-dir.")
    code, out, err = cli(["--resume", trained, "--epochs", "2"], capsys)
    assert code == 1 and err.strip() == (f"error: {trained}: a folder, not a weights file. Pass the checkpoint file "
                                         f"in it, e.g. {trained}/checkpoint.pth.")


def test_output_dir_inside_the_datasets_folders_is_refused(data, tmp_path, capsys):
    for sub in ("PNGImages", "PedMasks"):
        inside = os.path.join(data, sub) + "/"  # the folder itself (its subfolders are never read)
        code, out, err = cli(tiny_argv(data, inside), capsys)
        assert code == 1 and f"error: --output-dir {inside}: inside the dataset's {sub}/ folder" in err
        assert not os.path.exists(os.path.join(inside, "checkpoint.pth"))


def test_a_second_predict_keeps_the_first_unless_overwrite(trained, data, tmp_path, capsys):
    weights = os.path.join(trained, "checkpoint.pth")
    first, second = (os.path.join(data, "PNGImages", f"SynthPed0000{i}.png") for i in (1, 2))
    out = str(tmp_path / "o")
    assert cli(["--predict", first, "--weights", weights, "--output-dir", out], capsys)[0] == 0
    kept = sorted(os.listdir(os.path.join(out, "predict")))
    code, _, err = cli(["--predict", second, "--weights", weights, "--output-dir", out], capsys)
    assert code == 1 and err.strip() == (f"error: {out}/predict/ already holds predictions (results.json). Keep "
                                         f"them with another --output-dir, or replace them with --overwrite.")
    assert sorted(os.listdir(os.path.join(out, "predict"))) == kept
    shutil.copy(first, os.path.join(out, "predict", "mine.png"))  # the user's own files there are never removed
    with open(os.path.join(out, "predict", "notes.json"), "w") as f:
        f.write("{}")
    assert cli(["--predict", second, "--weights", weights, "--output-dir", out, "--overwrite"], capsys)[0] == 0
    assert sorted(os.listdir(os.path.join(out, "predict"))) == [
        "SynthPed00002.png.json", "SynthPed00002.png.png", "images.json", "mine.png", "notes.json", "results.json"]


def test_predict_reports_an_image_the_model_cannot_take_and_goes_on(trained, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.zeros((3000, 1, 3), np.uint8)).save(folder / "a_strip.png")  # resized to 0 px wide
    Image.fromarray(np.full((70, 60, 3), 128, np.uint8)).save(folder / "b_gray.png")
    out = tmp_path / "o"
    code, printed, err = cli(["--predict", str(folder), "--weights", os.path.join(trained, "checkpoint.pth"),
                              "--output-dir", str(out)], capsys)
    assert code == 1 and "Traceback" not in err
    assert f"error: {folder / 'a_strip.png'}: 1x3000 pixels: the model cannot take it (" in printed
    assert sorted(os.listdir(out / "predict")) == ["b_gray.png.json", "b_gray.png.png", "images.json",
                                                  "results.json"]


def test_a_plain_state_dict_is_built_as_the_model_asked_for(data, tmp_path, capsys):
    path = str(tmp_path / "frcnn.pth")
    torch.save(build("fasterrcnn", None, 3).state_dict(), path)  # trainable BatchNorm, 2 classes + background
    photo = os.path.join(data, "PNGImages", "SynthPed00001.png")
    code, out, err = cli(["--model", "fasterrcnn", "--weights", path, "--predict", photo, "--output-dir",
                          str(tmp_path / "o"), "--min-size", "64", "--max-size", "96"], capsys)
    assert code == 0, err
    code, out, err = cli(["--data-path", data, "--model", "fasterrcnn", "--weights", path, "--output-dir", "",
                          "--min-size", "64", "--max-size", "96", "-j", "0", "--test-size", "2"], capsys)
    assert code == 1 and err.strip() == ("error: the weights have 2 class(es) (their box predictor has 3 outputs, the "
                                         "background included), but the data has 1: pedestrian. Use weights trained "
                                         "on these classes.")
    code, out, err = cli(["--weights", path, "--predict", photo, "--output-dir", str(tmp_path / "o2")], capsys)
    assert code == 1 and err.startswith("error: the weights do not fit --model maskrcnn (Missing key(s) in state_dict")
    assert err.strip().endswith("Pass the --model the weights were trained as (with --demo for the demo's model).")


def test_weights_from_a_checkpoint_or_a_state_dict_start_a_new_run(data, tmp_path, capsys):
    """--weights FILE on a training run takes the model weights only: epoch 0, a new optimizer and
    the flags' schedule; --resume is what continues a run."""
    first = str(tmp_path / "first")
    run_main(*tiny_argv(data, first, epochs=1), quiet=True)
    ckpt = os.path.join(first, "checkpoint.pth")
    plain = str(tmp_path / "plain.pth")
    torch.save(torch.load(ckpt, weights_only=True)["model"], plain)
    for weights in (ckpt, plain):
        out = str(tmp_path / ("from_" + os.path.basename(weights)))
        # (a resumed run would say "finished at epoch 0" and train nothing)
        code, log, err = cli([*tiny_argv(data, out, epochs=1, weights=weights), "--model", "maskrcnn_resnet18"], capsys)
        assert code == 0, err
        assert "Resumed" not in log and "finished at epoch" not in log and "Epoch: [0]" in log
        saved = torch.load(os.path.join(out, "checkpoint.pth"), weights_only=True)
        assert [r["epoch"] for r in saved["records"]] == [0]
        assert saved["args"]["weights"] == weights


def test_out_of_memory_is_one_line(monkeypatch, capsys):
    def too_big(args):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 3200000000000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(tv_training, "main", too_big)
    code, out, err = cli(["--min-size", "1000000", "--max-size", "1000000"], capsys)
    assert code == 1 and err.startswith("error: out of memory ([enforce fail") and "Lower --batch-size" in err
    monkeypatch.setattr(tv_training, "main", lambda args: (_ for _ in ()).throw(RuntimeError("a real bug")))
    with pytest.raises(RuntimeError, match="a real bug"):  # other errors keep their traceback
        tv_training.cli([])


def test_every_flag_has_help_that_names_its_default():
    parser = tv_training.get_args_parser()
    flags = [a for a in parser._actions if a.option_strings and "--help" not in a.option_strings]
    assert all(a.help and a.help != argparse.SUPPRESS for a in flags), [a.dest for a in flags if not a.help]
    help_text = " ".join(parser.format_help().split())  # the columns' line breaks undone
    assert help_text.count("(default: ") == len(flags)
