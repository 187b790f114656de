"""A torch/torchvision pair that cannot run this project is one line at start-up, not a traceback."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT_DIR

import tv_training
from finetune import versions


def test_a_torchvision_built_for_another_torch_is_one_line_naming_both(tmp_path):
    # what a torchvision wheel compiled against another torch does on import
    fake = tmp_path / "site" / "torchvision"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), ROOT_DIR]))
    proc = subprocess.run([sys.executable, os.path.join(ROOT_DIR, "tv_training.py"), "--demo"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"torch {versions.installed('torch')} with torchvision {versions.installed('torchvision')}" in lines[0]
    assert "operator torchvision::nms does not exist" in lines[0] and versions.INSTALL in lines[0]


@pytest.mark.parametrize("torch_version, vision_version, too_old", [
    ("2.10.0+cpu", "0.26.0", "torch 2.10.0+cpu"), ("2.11.0", "0.25.1", "torchvision 0.25.1"),
    ("1.13.1", "0.14.1", "torch 1.13.1")])
def test_a_release_below_the_supported_range_is_named(torch_version, vision_version, too_old):
    line = versions.unsupported_line(torch_version, vision_version)
    assert line.startswith(f"error: {too_old} is older than this project supports")
    assert "torch >= 2.11 and torchvision >= 0.26" in line and versions.INSTALL in line


@pytest.mark.parametrize("torch_version, vision_version", [
    ("2.11.0", "0.26.0"), ("2.14.1+cu130", "0.29.1"), ("3.0.0a0", "1.0.0"), ("weird", "")])
def test_supported_and_unreadable_releases_pass(torch_version, vision_version):
    assert versions.unsupported_line(torch_version, vision_version) is None


def test_the_command_line_stops_on_an_old_torch_before_any_work(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch, "__version__", "2.9.1")
    with pytest.raises(SystemExit) as stopped:
        tv_training.cli(["--demo", "--output-dir", str(tmp_path / "out")])
    assert str(stopped.value).startswith("error: torch 2.9.1 is older than this project supports")
    assert not (tmp_path / "out").exists()
