"""benchmarks/recipes.py: the runs of docs/recipes.md's table, a table of their means, and an interrupted
or extended table going on from the runs its folder holds (the training runs replaced by a stand-in:
the real ones take minutes; ``--quick`` runs them for real)."""

import json

import pytest

from benchmarks import recipes


def fake_run(calls, failing=()):
    """A stand-in for ``run_one`` recording its calls: AP from the preset and seed, no segm for fasterrcnn."""
    def run_one(model, preset, seed, data, budget, out_dir):
        calls.append((model, preset, seed))
        if (model, preset, seed) in failing:
            return dict(returncode=1)
        ap = 0.1 * (1 + recipes.ROWS.index(preset)) + 0.01 * seed
        return dict(returncode=0, epoch_seconds=2.0 + seed, bbox=ap, segm=None if "faster" in model else ap / 2)
    return run_one


@pytest.fixture
def stand_ins(monkeypatch):
    monkeypatch.setattr(recipes, "make_data", lambda root, budget: ("train.json", "val.json"))
    monkeypatch.setattr(recipes, "cpu_line", lambda: "Test CPU (family 1, model 2), 2 cores; bf16/AMX flags: none")


def test_the_plan_is_each_preset_with_the_demo_model_then_each_other_model_with_hflip():
    rows = dict.fromkeys(row for row, *_ in recipes.plan(["fasterrcnn"], [0]))
    assert list(rows) == [f"--data-augmentation {p}" for p in recipes.PRESETS] + [
        "--data-augmentation lsj --use-copypaste", "--model fasterrcnn"]
    runs = recipes.plan(["fasterrcnn", recipes.DEMO_MODEL], [0, 1], ("hflip", "lsj"))
    assert runs == [("--data-augmentation hflip", recipes.DEMO_MODEL, "hflip", 0),
                    ("--data-augmentation hflip", recipes.DEMO_MODEL, "hflip", 1),
                    ("--data-augmentation lsj", recipes.DEMO_MODEL, "lsj", 0),
                    ("--data-augmentation lsj", recipes.DEMO_MODEL, "lsj", 1),
                    ("--model fasterrcnn", "fasterrcnn", "hflip", 0), ("--model fasterrcnn", "fasterrcnn", "hflip", 1)]


def test_the_table_gives_means_over_seeds_and_a_failed_row_says_so(stand_ins, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(recipes, "run_one", fake_run(calls, failing={("fasterrcnn_v2", "hflip", 0),
                                                                     ("fasterrcnn_v2", "hflip", 1)}))
    result = recipes.main(["--models", "fasterrcnn", "fasterrcnn_v2", "--presets", "hflip", "ssd",
                           "--out", str(tmp_path)])
    lines = result["table"].splitlines()
    assert lines[0].startswith("Measured on Test CPU (family 1, model 2)") and "seeds 0, 1" in lines[0]
    assert "| --data-augmentation hflip | 0.105 | 0.053 | 2.5 |" in lines
    assert "| --data-augmentation ssd | 0.405 | 0.203 | 2.5 |" in lines
    assert "| --model fasterrcnn | 0.105 | - | 2.5 |" in lines  # box-only: no segm AP
    assert "| --model fasterrcnn_v2 | failed | failed | |" in lines
    assert (tmp_path / "table.md").read_text().strip() == result["table"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["runs"]) == 6 and all(r["returncode"] == 0 for r in saved["runs"])  # failed runs not kept


def test_a_second_command_keeps_the_runs_done_and_runs_only_the_rest(stand_ins, monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(recipes, "run_one", fake_run(calls, failing={(recipes.DEMO_MODEL, "lsj", 1)}))
    first = recipes.main(["--models", recipes.DEMO_MODEL, "--presets", "hflip", "lsj", "--out", str(tmp_path)])
    assert len(calls) == 4
    assert "| --data-augmentation lsj (seed 0 only) | 0.200 | 0.100 | 2.0 |" in first["table"].splitlines()
    calls.clear()
    monkeypatch.setattr(recipes, "run_one", fake_run(calls))
    result = recipes.main(["--models", "fasterrcnn", "--presets", "hflip", "lsj", "--out", str(tmp_path)])
    # the failed run and the new model's two; the three that succeeded are read back
    assert calls == [(recipes.DEMO_MODEL, "lsj", 1), ("fasterrcnn", "hflip", 0), ("fasterrcnn", "hflip", 1)]
    assert capsys.readouterr().out.count("kept from") == 3
    assert len(result["results"]) == 6
    # another budget (--epochs) measures everything again
    calls.clear()
    recipes.main(["--models", "fasterrcnn", "--presets", "hflip", "--epochs", "1", "--out", str(tmp_path)])
    assert len(calls) == 4 and "measured on another CPU or budget" in capsys.readouterr().out


def test_ctrl_c_keeps_the_runs_done_and_says_how_to_go_on(stand_ins, monkeypatch, tmp_path, capsys):
    calls, finish = [], fake_run([])

    def interrupted_second(*args):
        calls.append(args[:3])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return finish(*args)

    monkeypatch.setattr(recipes, "run_one", interrupted_second)
    with pytest.raises(SystemExit) as e:
        recipes.main(["--models", recipes.DEMO_MODEL, "--presets", "hflip", "--out", str(tmp_path)])
    assert e.value.code == 130
    err = capsys.readouterr().err
    assert err.splitlines() == [f"interrupted during {recipes.DEMO_MODEL}_hflip_seed1: the 1 runs done are kept in "
                                f"{tmp_path / 'results.json'}; the same command goes on from them"]
    assert [r["seed"] for r in json.loads((tmp_path / "results.json").read_text())["runs"]] == [0]


@pytest.mark.parametrize("argv,words", [(["--models", "nope"], "not a --model of tv_training.py: nope"),
                                        (["--epochs", "0"], "expected an integer >= 1, got '0'"),
                                        (["--seeds", "-1"], "expected an integer >= 0, got '-1'")])
def test_bad_values_are_one_usage_line_before_any_run(stand_ins, monkeypatch, tmp_path, capsys, argv, words):
    monkeypatch.setattr(recipes, "run_one", fake_run(calls := []))
    with pytest.raises(SystemExit) as e:
        recipes.main([*argv, "--out", str(tmp_path / "out")])
    assert e.value.code == 2 and words in capsys.readouterr().err.strip().splitlines()[-1]
    assert not calls and not (tmp_path / "out").exists()


def test_a_relative_out_means_the_folder_it_was_typed_in(stand_ins, monkeypatch, tmp_path):
    """The runs start in the repository's root: --out typed relative to another folder is made absolute first."""
    seen = []
    monkeypatch.setattr(recipes, "make_data", lambda root, budget: seen.append(root) or ("train.json", "val.json"))
    run_one = fake_run([])
    monkeypatch.setattr(recipes, "run_one", lambda *a: seen.append(a[-1]) or run_one(*a))
    monkeypatch.chdir(tmp_path)
    recipes.main(["--models", "fasterrcnn", "--presets", "hflip", "--seeds", "0", "--out", "rec"])
    assert seen == [str(tmp_path / "rec" / "data"), str(tmp_path / "rec" / f"{recipes.DEMO_MODEL}_hflip_seed0"),
                    str(tmp_path / "rec" / "fasterrcnn_hflip_seed0")]
    assert (tmp_path / "rec" / "results.json").is_file()
