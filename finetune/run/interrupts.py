"""Ctrl-C during a run: training stops at the next safe point on every rank (``StopAtSafePoint``),
the error that says what was kept, and the command lines that resume the run or redo its report."""

import os
import shlex
import shutil
import signal
import sys
import threading
import time

import torch
import torch.distributed as dist

import utils
from finetune.errors import TrainingInterrupted
from finetune.outputs.report import remove_partial


def interrupted(records, checkpoint_path, finished=False):
    """The ``TrainingInterrupted`` for a run stopped by Ctrl-C after ``records`` (its complete epochs);
    ``finished``: every epoch was done, the press came while the final figures or report were made."""
    kept = checkpoint_path if checkpoint_path and os.path.exists(checkpoint_path) else None
    if finished:  # the checkpoint is complete: a resume would train nothing (cli says how to redo the report)
        error = TrainingInterrupted(f"interrupted after the last epoch: training is complete"
                                    f"{f' (saved in {kept})' if kept else ''}, but the final figures or the report "
                                    f"may be missing")
        error.finished = kept
        return error
    done = f"epoch {records[-1]['epoch']} is the last complete one" if records else "no epoch completed"
    return TrainingInterrupted(f"interrupted: {done}" + (f", saved in {kept}" if kept else ""), checkpoint=kept)


def python_command():
    """The interpreter running this script as a printed command should name it, so that it pastes
    into a new shell: ``python`` where that is the one on PATH, else its path (relative to the
    working folder when inside it: ``.venv/bin/python``, as the README runs it). Paths are compared
    as written: a virtual environment's python links to the system's, and is not it."""
    exe = sys.executable
    if not exe:
        return "python"
    on_path = shutil.which("python")
    if on_path and os.path.abspath(on_path) == os.path.abspath(exe):
        return "python"
    relative = os.path.relpath(exe)
    return exe if relative.startswith(os.pardir) else relative


def _script():
    """This script as it was started (``path/to/tv_training.py``), so a printed command pastes."""
    return sys.argv[0] if os.path.basename(sys.argv[0]) == "tv_training.py" else "tv_training.py"


def _without(argv, with_value, switches=()):
    """``argv`` less the options ``with_value`` (as ``--opt v`` or ``--opt=v``) and the ``switches``."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in with_value:
            skip = True
        elif not arg.startswith(tuple(f"{o}=" for o in with_value)) and arg not in switches:
            kept.append(arg)
    return kept


def report_command(argv, checkpoint):
    """The command line that evaluates ``checkpoint`` as the run ``argv`` did, writing its report."""
    kept = _without(argv, ("--resume", "--weights", "--epochs"), ("--overwrite",))
    return " ".join(shlex.quote(a) for a in [python_command(), _script(), *kept, "--test-only", "--weights",
                                             checkpoint])


def resume_command(argv, checkpoint):
    """The command line that continues an interrupted run: the same options plus --resume."""
    kept = _without(argv, ("--resume",))
    launcher = [python_command()]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "TORCHELASTIC_RUN_ID" in os.environ:  # under torchrun
        launcher = ["torchrun", f"--nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', os.environ['WORLD_SIZE'])}"]
    return " ".join(shlex.quote(a) for a in [*launcher, _script(), *kept, "--resume", checkpoint])


class StopAtSafePoint:
    """Ctrl-C during training stops the run after the current iteration, whatever was running.

    Python turns SIGINT into a KeyboardInterrupt wherever the main thread is; inside a weakref
    callback or a finalizer run by the garbage collector it is printed and dropped, and training
    goes on. Here the first Ctrl-C only records the request. Loaders wrapped with ``wrap`` stop
    before their next batch, and ``check()`` stops at other safe points (after a checkpoint):
    both raise KeyboardInterrupt from this code, where nothing can drop it. Under torchrun every
    rank asks the others first, so all stop at the same iteration and no collective is left
    waiting. A second Ctrl-C ends the process at once (exit status 130): checkpoints are renamed
    into place whole, so the last complete one is intact, and a checkpoint being written is
    discarded (its temporary file in ``output_dir``).

    A context manager: the previous SIGINT handler is restored on exit (only the main thread
    can install one; elsewhere this does nothing but answer ``check``).
    """

    SAME_PRESS_S = 0.5  # signals closer together than this count as one press

    def __init__(self, output_dir=None):
        self.output_dir = output_dir
        self.trained = False  # set once the last epoch is done: a resume would then train nothing
        self._group = None
        self.requested = 0
        self._first = 0.0
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        # The ranks agree on a host-side gloo group: with NCCL, a flag on the GPU would make every
        # iteration wait for the GPU. new_group is itself collective: every rank enters here.
        self._group = None
        if utils.is_dist_avail_and_initialized() and dist.get_backend() != "gloo":
            self._group = dist.new_group(backend="gloo")
        return self

    def __exit__(self, *exc_info):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return False

    def _on_sigint(self, signum, frame):
        now = time.monotonic()
        if self.requested and now - self._first < self.SAME_PRESS_S:
            return  # the same press seen twice (torchrun forwards the terminal's SIGINT to its workers)
        self.requested += 1
        if self.requested == 1:
            self._first = now
            if utils.is_main_process():  # os.write: a print could re-enter a write the handler interrupted
                os.write(2, b"\nCtrl-C: stopping after the current iteration (Ctrl-C again to stop at once)\n")
            return
        # A KeyboardInterrupt raised here could be dropped like the first; end the process instead.
        kept = ""
        if self.output_dir:
            for name in os.listdir(self.output_dir):
                if name.startswith(f".tmp-{os.getpid()}-"):  # a half-written file of utils.atomic_write
                    os.remove(os.path.join(self.output_dir, name))
            remove_partial(self.output_dir)  # a report being drawn: the earlier one in report/ stays
            ckpt = os.path.join(self.output_dir, "checkpoint.pth")
            if os.path.exists(ckpt):
                kept = f"; training is complete, in {ckpt} (the report: --test-only --weights {ckpt})" \
                    if self.trained else f"; the last complete epoch is in {ckpt} (--resume {ckpt})"
        if utils.is_main_process():
            os.write(2, f"\nCtrl-C again: stopped at once{kept}\n".encode())
        os._exit(130)

    def should_stop(self):
        """Whether any process asked to stop (a collective under torchrun: every rank calls it)."""
        stop = self.requested > 0
        if utils.is_dist_avail_and_initialized():
            flag = torch.tensor([int(stop)])  # on the host: no GPU sync per iteration
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
            stop = bool(flag.item())
        return stop

    def check(self):
        if self.should_stop():
            raise KeyboardInterrupt

    def wrap(self, data_loader):
        """``data_loader`` that checks for a stop request before each batch."""
        return _StoppableLoader(data_loader, self)


class _StoppableLoader:
    def __init__(self, data_loader, stop):
        self.data_loader, self.stop = data_loader, stop

    def __len__(self):
        return len(self.data_loader)

    def __getattr__(self, name):  # .dataset, .batch_sampler, ...
        return getattr(self.data_loader, name)

    def __iter__(self):
        batches = iter(self.data_loader)
        while True:
            self.stop.check()
            try:
                batch = next(batches)
            except StopIteration:
                return
            yield batch
