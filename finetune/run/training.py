"""What this project adds around the tutorial's training loop (``tv_training.train``): each epoch's
seeds, its record, checkpoint.pth, best.pth, metrics.json and curves.png (and TensorBoard's
files), the figures and the report at the end, Ctrl-C at a safe point, and errors mid-run as one
line."""

import contextlib
import dataclasses
import os

import torch

import utils
from engine import NonFiniteLossError
from finetune.errors import TutorialError
from finetune.outputs import metrics, plots, report, tensorboard
from finetune.run import checkpoints, interrupts, run_folder
from finetune.speedups import inference


@dataclasses.dataclass
class Sampling:
    """What draws each epoch's order: the seed, the training loader's sampler (a DistributedSampler
    under torchrun) and the generator that shuffles it (None for a distributed run)."""

    seed: int = 0
    train_sampler: object = None
    shuffle_gen: torch.Generator | None = None

    def seed_epoch(self, epoch):
        """Each epoch's randomness (shuffling, flips) depends on (seed, epoch) alone, so a resumed run
        repeats the uninterrupted one exactly. Under torchrun each rank draws its own flips (rank 0
        keeps the single-process stream)."""
        torch.manual_seed(self.seed + epoch + 1_000_003 * utils.get_rank())
        if self.shuffle_gen is not None:
            self.shuffle_gen.manual_seed(self.seed + epoch)
        if isinstance(self.train_sampler, torch.utils.data.DistributedSampler):
            self.train_sampler.set_epoch(epoch)


@dataclasses.dataclass
class Evaluation:
    """The test set's ground truth (None: no evaluation), its classes, and how to evaluate fast
    (``inference.inference_speedups``' ``eval_bf16`` and ``channels_last``)."""

    coco_gt: object = None
    classes: list | None = None
    eval_bf16: bool = False
    channels_last: str = "auto"


@dataclasses.dataclass
class Saving:
    """What a run writes in ``output_dir`` ('' writes nothing): ``run_args`` (the settings a resume
    takes) and ``spec`` (the model's description) in each checkpoint; best.pth by ``best_metric``;
    preview.png from ``preview`` (data root, dataset or None); the report from ``report_info``
    (``report.run_info``'s arguments but the records), its figures at ``score_threshold``.
    ``replace_earlier_run`` (--overwrite): an earlier run there is removed first, unless it is the
    one continued from ``resumed_from``. ``tensorboard``: event files in ``output_dir/tensorboard``."""

    output_dir: str = ""
    run_args: dict | None = None
    spec: dict | None = None
    best_metric: str = "auto"
    score_threshold: float = 0.5
    preview: tuple | None = None
    report_info: dict | None = None
    replace_earlier_run: bool = False
    resumed_from: str | None = None
    tensorboard: bool = False


@dataclasses.dataclass
class EpochOptions:
    """``train_one_epoch``'s options: the GradScaler (None: none), the log's period, gradient
    clipping, and the autocast type with a scaler (``hardware.amp_dtype``; None: the engine's)."""

    scaler: object = None
    print_freq: int = 10
    clip_grad_norm: float | None = None
    amp_dtype: torch.dtype | None = None


class TrainingRun:
    """One training run's state beside the tutorial's loop: the epochs done so far (``records``,
    a resumed run's included) and where the loop starts again (``start_epoch``)."""

    def __init__(self, sampling, evaluation, saving, options, start_epoch=0, records=None):
        self.sampling, self.evaluation, self.saving, self.options = sampling, evaluation, saving, options
        self.start_epoch, self.records = start_epoch, list(records or [])
        self.checkpoint_path = os.path.join(saving.output_dir, "checkpoint.pth") if saving.output_dir else None
        self.trained, self._stop, self._board = False, None, None

    @contextlib.contextmanager
    def safe_points(self):
        """Around the whole loop: Ctrl-C stops after the current iteration (the last complete
        checkpoint stays) and raises ``TrainingInterrupted``; a non-finite loss and an unwritable
        output folder end in one line naming the checkpoint that is kept."""
        out = self.saving.output_dir
        if self.saving.replace_earlier_run and out:  # only now: a typo in the data path must not cost the earlier run
            run_folder.clear_earlier_run(out, self.saving.resumed_from)
        try:
            with interrupts.StopAtSafePoint(out) as stop:
                self._stop = stop
                if out and self.saving.preview is not None:  # inside: a Ctrl-C while drawn stops before the first step
                    plots.save_preview(self.saving.preview[0], os.path.join(out, "preview.png"), self.saving.preview[1])
                yield stop
        except KeyboardInterrupt:
            raise interrupts.interrupted(self.records, self.checkpoint_path, finished=self.trained) from None
        except NonFiniteLossError as e:
            raise TutorialError(f"{e}{self._kept('; the last good checkpoint is {}')}") from None
        except OSError as e:  # the output folder filled up or became unwritable mid-run
            kept = self._kept("; the last complete epoch is in {0} (--resume {0} once it is fixed)")
            raise TutorialError(f"{e.filename or out}: cannot be written ({e.strerror or e}){kept}") from None
        finally:
            if self._board is not None:  # what is written so far stays readable, after an error too
                self._board.close()

    def _kept(self, template):
        path = self.checkpoint_path
        return template.format(path) if path and os.path.exists(path) else ""

    def loss_history(self, optimizer, epoch, iterations):
        """The list ``train_one_epoch`` appends each iteration's losses to; with ``--tensorboard``
        one that writes them (and the lr) to TensorBoard at once, opened at the first epoch
        (``iterations``: the epoch's, which number the steps)."""
        s = self.saving
        if not (s.tensorboard and s.output_dir):
            return []
        if self._board is None:
            self._board = tensorboard.TensorBoardLog(os.path.join(s.output_dir, "tensorboard"), self.start_epoch,
                                                     iterations)
        return self._board.iteration_log(optimizer, epoch)

    def fast_evaluation(self, model, device):
        """--eval-bf16, and the memory format that evaluates fastest on this CPU."""
        return inference.inference_speedups(model, device, self.evaluation.eval_bf16, self.evaluation.channels_last)

    def end_epoch(self, model, optimizer, lr_scheduler, epoch, timing, logs, coco_evaluator):
        """The epoch's record (``timing``: (lr, training seconds, epoch seconds); ``logs``: the
        MetricLogger and the per-iteration losses), then checkpoint.pth, best.pth, metrics.json and
        curves.png; stops here after a Ctrl-C."""
        lr, train_time, epoch_time = timing
        self.records.append(metrics.epoch_record(epoch, lr, train_time, epoch_time, logs[0], logs[1], coco_evaluator,
                                                 self.evaluation.classes))
        s = self.saving
        if s.output_dir:
            checkpoints.save_checkpoint(self.checkpoint_path, model, optimizer, lr_scheduler, self.options.scaler,
                                        epoch, s.run_args, self.records, s.spec)
            checkpoints.save_if_best(os.path.join(s.output_dir, "best.pth"), self.records, s.best_metric, model,
                                     s.spec, s.run_args)
            metrics.save_epoch_outputs(s.output_dir, self.records)
        if self._board is not None:
            self._board.epoch(self.records[-1])
        self._stop.check()

    def finish(self, model, device, dataset_test, coco_evaluator):
        """After the last epoch: the test images' figures and the report (output-dir/report/)."""
        self.trained = self._stop.trained = True
        s = self.saving
        if s.output_dir:
            with self.fast_evaluation(model, device):
                figures = plots.save_final_figures(model, dataset_test, device, s.output_dir, s.score_threshold,
                                                   self.evaluation.classes)
            if self._board is not None:
                self._board.figures(figures, self.records[-1]["epoch"] if self.records else 0)
            if coco_evaluator is not None and s.report_info is not None:
                report.write_report(s.output_dir, report.ReportInputs(
                    coco_evaluator, dataset_test, self.evaluation.classes,
                    report.run_info(**s.report_info, records=self.records), self.records[-1], s.score_threshold,
                    records=self.records, curves_png=os.path.join(s.output_dir, "curves.png")))
        self._stop.check()

    def result(self):
        """What ``main`` returns: the last epoch's metrics and every epoch's record."""
        return dict(self.records[-1] if self.records else {}, records=self.records)
