"""The torch/torchvision pair a run stands on, checked before anything else: a torchvision built
for another torch (its compiled operators, such as ``torchvision::nms``, then fail to load) or a
release older than the supported range is one line naming both versions and the command that
installs a matching pair, instead of a traceback deep in a run."""

import importlib.metadata
import re

# the lowest pair the suite passes on (the GPU machines' torch 2.11 / torchvision 0.26), and the
# exact pair constraints.txt pins for a fresh environment
LOWEST = dict(torch=(2, 11), torchvision=(0, 26))
TESTED = "torch==2.14.1 torchvision==0.29.1"
INSTALL = "pip install -r requirements.txt -c constraints.txt"


def installed(name):
    """The installed distribution's version string, None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def release(version):
    """``(major, minor)`` of a version string such as "2.14.1+cu130" or "0.26.0a0"."""
    found = re.match(r"(\d+)\.(\d+)", version or "")
    return (int(found[1]), int(found[2])) if found else None


def broken_pair_line(error):
    """The line for an ``import torch``/``import torchvision`` that failed with ``error``."""
    torch_version, vision_version = installed("torch") or "(not installed)", installed("torchvision") or \
        "(not installed)"
    cause = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
    return (f"error: torch {torch_version} with torchvision {vision_version} does not load ({cause}). Install a "
            f"matching pair: {INSTALL} (the tested {TESTED}), or the torchvision release built for your torch "
            f"(README: 'In Colab or an environment with torch already installed').")


def unsupported_line(torch_version, vision_version):
    """None for a supported pair; else the line that says which release is too old and what to install."""
    for name, version in (("torch", torch_version), ("torchvision", vision_version)):
        have = release(version)
        if have is not None and have < LOWEST[name]:
            low = ".".join(map(str, LOWEST[name]))
            return (f"error: {name} {version} is older than this project supports ({name} >= {low}, with torch "
                    f">= {'.'.join(map(str, LOWEST['torch']))} and torchvision >= "
                    f"{'.'.join(map(str, LOWEST['torchvision']))}); install a newer pair: {INSTALL} "
                    f"(the tested {TESTED}).")
    return None
