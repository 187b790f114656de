"""Files written whole or not at all: JSON, text and PNG through ``utils.atomic_write`` (a
temporary file, then a rename, so a run killed while writing keeps the previous version),
``NoInterrupt`` around renames that must happen together, and ``check_output_dir``.
"""

import json
import os
import signal
import tempfile
import threading

from PIL import Image

from finetune.errors import TutorialError
from utils import atomic_write


def write_json_atomic(obj, path):
    """``json.dump`` to a temporary file, then rename over ``path``."""
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)

    atomic_write(path, write)


def write_text_atomic(text, path):
    """``text`` to a temporary file, then rename over ``path``."""
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


def save_png(chw_uint8, path):
    """Save a (3, H, W) uint8 tensor as a PNG, via a temporary file renamed over ``path``."""
    image = Image.fromarray(chw_uint8.permute(1, 2, 0).cpu().numpy())
    # compress_level 1: a 12-megapixel overlay in a fraction of a second instead of seconds
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG", compress_level=1))


class NoInterrupt:
    """Ctrl-C ignored for a few renames that must happen together (main thread only): a press there
    is dropped, the files are then whole and consistent, and the run ends right after."""

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def check_output_dir(path):
    """``path`` can be created and written (a test file is written and removed)."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise TutorialError(f"--output-dir {path}: cannot be created or written ({e.strerror or e}). "
                            f"Pick a folder you can write to.") from None
