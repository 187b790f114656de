"""The layout's import rules that import-linter cannot check (it reads packages, and the reference
helpers and tv_training.py are plain modules): the helpers import only each other, the standard
library and torch/torchvision/pycocotools/numpy; nothing imports tv_training.py."""

import ast
import glob
import os
import re
import sys

import pytest
from conftest import ROOT_DIR

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the checks below need it

HELPERS = ("engine", "utils", "coco_utils", "coco_eval", "transforms", "group_by_aspect_ratio")
ALLOWED = set(HELPERS) | {"torch", "torchvision", "pycocotools", "numpy"}


def imported_modules(path):
    """The top-level names of every module ``path`` imports, at any depth of the file."""
    tree = ast.parse(open(path).read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_reference_helpers_import_only_each_other_and_torch():
    for name in HELPERS:
        foreign = imported_modules(os.path.join(ROOT_DIR, name + ".py")) - ALLOWED - set(sys.stdlib_module_names)
        assert not foreign, f"{name}.py imports {sorted(foreign)}"


def test_only_the_top_level_holds_the_tutorial_and_the_helpers():
    top = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT_DIR, "*.py")))
    assert top == sorted(HELPERS + ("tv_training",))
    package = glob.glob(os.path.join(ROOT_DIR, "finetune", "**", "*.py"), recursive=True)
    assert package and all("tv_training" not in imported_modules(p) for p in package)
    rooms = {os.path.relpath(p, os.path.join(ROOT_DIR, "finetune")).split(os.sep)[0] for p in package}
    assert {"data", "models", "speedups", "outputs", "run"} <= rooms
    # at most one level of subpackages
    assert all(os.path.relpath(p, ROOT_DIR).count(os.sep) <= 2 for p in package)


def requirement_lines(name):
    """The requirement lines of ``name`` (comments, blank lines and ``-r`` includes left out)."""
    with open(os.path.join(ROOT_DIR, name)) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith(("#", "-r"))]


def test_pyproject_names_the_same_dependencies_as_the_requirements_files():
    with open(os.path.join(ROOT_DIR, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    assert project["project"]["dependencies"] == requirement_lines("requirements.txt")
    assert project["project"]["optional-dependencies"]["export"] == requirement_lines("requirements-export.txt")
    assert project["dependency-groups"]["dev"] == requirement_lines("requirements-dev.txt")
    # every package named anywhere has its exact tested version in constraints.txt
    pinned = {line.split("==")[0].lower() for line in requirement_lines("constraints.txt")}
    named = {re.split(r"[<>=!~ ]", line)[0].lower() for name in ("requirements.txt", "requirements-export.txt",
                                                                   "requirements-dev.txt")
             for line in requirement_lines(name)}
    assert named == pinned
