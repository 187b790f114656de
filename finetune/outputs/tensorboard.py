"""``--tensorboard``: the run's numbers as TensorBoard event files in ``output-dir/tensorboard/``
(``tensorboard --logdir output/tensorboard``): each iteration's losses and lr as it trains, each
epoch's COCO numbers and per-class AP, and the prediction figures at the end."""

import glob
import os

import numpy as np
from PIL import Image

from finetune.errors import TutorialError

MISSING = "--tensorboard needs the tensorboard package: pip install tensorboard"

# the tags: train/<loss term>, train/lr per iteration (step: iterations since the run began);
# <iou type>/<COCO number> and per_class_AP/<bbox|bbox50|segm>/<class> per epoch (step: the epoch)
ITERATION_KEYS = ("epoch", "iteration")


def summary_writer_class():
    """``torch.utils.tensorboard.SummaryWriter``; without the tensorboard package, one line naming it."""
    try:
        # imported here, not at the top: tensorboard is an optional dependency, needed with --tensorboard only
        from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415
    except ImportError:
        raise TutorialError(MISSING) from None
    return SummaryWriter


def check_tensorboard(enabled, training, output_dir):
    """Before any work: ``--tensorboard`` has its package, and a folder to write in."""
    if not (enabled and training):
        return
    summary_writer_class()
    if not output_dir:
        print("warning: --tensorboard with --output-dir '': nothing is written, TensorBoard's files included.")


class IterationLog(list):
    """``engine.train_one_epoch``'s ``loss_history`` list that also writes each iteration's loss
    terms, and the lr the engine logs with them, to TensorBoard as the engine appends them."""

    def __init__(self, writer, optimizer, first_step):
        super().__init__()
        self.writer, self.optimizer, self.first_step = writer, optimizer, first_step

    def append(self, entry):
        super().append(entry)
        step = self.first_step + entry["iteration"]
        for key, value in entry.items():
            if key not in ITERATION_KEYS:
                self.writer.add_scalar(f"train/{key}", value, step)
        self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], step)


class TensorBoardLog:
    """The event files of one run in ``log_dir``. A new run (``first_epoch`` 0) removes the event
    files an earlier one left there; a resumed run appends, with whatever an interrupted epoch had
    written from ``first_epoch`` on hidden (``purge_step``), so that no step shows twice."""

    def __init__(self, log_dir, first_epoch=0, iterations_per_epoch=0):
        writer_class = summary_writer_class()
        if first_epoch == 0:
            for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
                os.remove(path)
        self.iterations_per_epoch = iterations_per_epoch
        purge = first_epoch * iterations_per_epoch if first_epoch else None
        self.writer = writer_class(log_dir, purge_step=purge)

    def iteration_log(self, optimizer, epoch):
        """The ``loss_history`` to give ``train_one_epoch`` for ``epoch``."""
        return IterationLog(self.writer, optimizer, epoch * self.iterations_per_epoch)

    def epoch(self, record):
        """An epoch's record (``metrics.epoch_record``): its COCO numbers and per-class AP (a class
        without ground truth, -1, is left out), written out at once."""
        step = record["epoch"]
        for iou in ("bbox", "segm"):
            for name, value in record.get(iou, {}).items():
                self.writer.add_scalar(f"{iou}/{name}", value, step)
        for name, row in record.get("per_class", {}).items():
            for key, value in row.items():
                if value != -1:
                    self.writer.add_scalar(f"per_class_AP/{key}/{name}", value, step)
        self.writer.flush()

    def figures(self, paths, step):
        """The prediction figures (PNG files) as images ``predictions/<file name>``."""
        for path in paths:
            with Image.open(path) as im:
                pixels = np.asarray(im.convert("RGB"))
            self.writer.add_image(f"predictions/{os.path.basename(path)}", pixels, step, dataformats="HWC")
        self.writer.flush()

    def close(self):
        self.writer.close()
