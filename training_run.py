"""The parts of a training run around the tutorial's loops: device, optimizer and lr schedule
from the flags, checkpoints and resuming, Ctrl-C, and the command that continues a stopped run."""

import os
import shlex
import signal
import sys
import threading
import time

import torch
import torch.distributed as dist

import utils
from errors import TrainingInterrupted


def pick_device(name, gpu=None):
    """``name``: "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N". Under
    torchrun with CUDA each process takes its own GPU (``gpu``, from ``init_distributed_mode``)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else torch.device(name)
    if gpu is not None and device.type == "cuda":
        device = torch.device("cuda", gpu)
    return device


def loader_workers(requested):
    """Data-loading workers: ``requested``, capped at the CPU cores (more only compete with the model)."""
    workers = min(requested, os.cpu_count() or 1)
    if workers < requested:
        print(f"Using {workers} data-loading workers (-j {requested} capped at the {os.cpu_count()} CPU cores)")
    return workers


def make_optimizer(model, opt, lr, momentum, weight_decay):
    """SGD (the tutorial's) or AdamW over the parameters that train.

    AdamW runs fused (one kernel over all parameters) on the CPU and CUDA: the same update,
    rounded differently, and faster than one call per parameter per operation (docs/speed.md).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if opt == "adamw":
        fused = bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def make_grad_scaler(device, amp):
    """The ``scaler`` for ``engine.train_one_epoch``: None without ``amp`` (float32), else a
    ``torch.amp.GradScaler``, which makes the engine autocast. It scales the loss only on CUDA,
    whose autocast type is float16. The CPU autocasts to bfloat16, which has float32's exponent
    range: there a disabled scaler passes the loss and the step through unchanged, instead of
    multiplying and checking every gradient for nothing.
    """
    if not amp:
        return None
    device_type = torch.device(device).type
    return torch.amp.GradScaler(device_type, enabled=device_type == "cuda")


def make_lr_scheduler(optimizer, name, epochs, step_size, gamma):
    """StepLR (the tutorial: lr x ``gamma`` every ``step_size`` epochs) or cosine over ``epochs``."""
    if name == "cosineannealinglr":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)


def _plain(settings):
    """The run's settings as a plain dict (weights_only=True loads it), from a dict or a Namespace."""
    return dict(settings if isinstance(settings, dict) else vars(settings))


def save_checkpoint(path, model, optimizer, lr_scheduler, scaler, epoch, args, records, model_spec):
    """Everything a resumed run needs, written atomically (rank 0 only). ``args``: the run's
    settings (a dict or argparse.Namespace), whose recipe a resumed run takes."""
    checkpoint = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": lr_scheduler.state_dict(),
        "epoch": epoch,
        "args": _plain(args),
        "model_spec": model_spec,
        "records": records,
    }
    if scaler is not None:
        checkpoint["scaler"] = scaler.state_dict()
    utils.save_on_master(checkpoint, path)


def best_metric_value(record, metric):
    """The number ``metric`` ("bbox", "bbox50", "segm", "segm50") picks from an epoch's record, or None."""
    iou, stat = (metric[:-2], "AP50") if metric.endswith("50") else (metric, "AP")
    return record[iou][stat] if iou in record else None


def save_if_best(path, records, metric, model, model_spec, args):
    """Write ``path`` (model, classes, arguments, epoch, metric; no optimizer state) when the last
    epoch of ``records`` beats every earlier one on ``metric`` ("auto": segm AP for mask models,
    bbox AP otherwise); a tie keeps the earlier epoch. Earlier epochs come from ``records``, so a
    resumed run keeps track of the best so far. Returns True when it wrote."""
    if metric == "auto":
        metric = "segm" if "segm" in records[-1] else "bbox"
    values = [best_metric_value(r, metric) for r in records]
    if values[-1] is None or any(v is not None and v >= values[-1] for v in values[:-1]):
        return False
    utils.save_on_master(dict(model=model.state_dict(), model_spec=model_spec, args=_plain(args),
                              epoch=records[-1]["epoch"], metric=metric, value=values[-1]), path)
    name = f"{metric[:-2]} AP50" if metric.endswith("50") else f"{metric} AP"
    print(f"New best {name} {values[-1]:.4f} at epoch {records[-1]['epoch']}: saved {path}")
    return True


def restore_training_state(checkpoint, optimizer, lr_scheduler, scaler):
    """Load the optimizer, lr scheduler and scaler states; returns (next epoch, epoch records so far).

    Moment buffers take their parameter's memory layout: a checkpoint written on the CPU holds
    them channels_last (the CPU default), and fused AdamW on CUDA refuses buffers whose strides
    differ from their NCHW parameters' (and the reverse on the CPU only costs copies).
    """
    optimizer.load_state_dict(checkpoint["optimizer"])
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
    lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
    # a disabled scaler (CPU) saves an empty state, which an enabled one (CUDA) refuses to load
    if scaler is not None and scaler.is_enabled() and checkpoint.get("scaler"):
        scaler.load_state_dict(checkpoint["scaler"])
    start_epoch = checkpoint["epoch"] + 1
    return start_epoch, [r for r in checkpoint.get("records", []) if r["epoch"] < start_epoch]


def resume(checkpoint, path, epochs, optimizer, lr_scheduler, scaler):
    """``--resume path``: the training state of ``checkpoint`` restored (``restore_training_state``);
    returns (next epoch, records so far). ``(0, [])`` without ``path``: a checkpoint given as
    ``--weights`` starts a new run from its model weights (epoch 0, a new optimizer and schedule).
    A run that already reached ``epochs`` says so (the caller then trains nothing)."""
    if checkpoint is None or not path:
        return 0, []
    start_epoch, records = restore_training_state(checkpoint, optimizer, lr_scheduler, scaler)
    if start_epoch >= epochs:
        print(f"{path}: finished at epoch {start_epoch - 1}; raise --epochs to continue")
    else:
        print(f"Resumed from {path}: continuing at epoch {start_epoch}")
    return start_epoch, records


def is_out_of_memory(error):
    """Whether ``error`` is an allocation that failed (torch.OutOfMemoryError on CUDA, a
    RuntimeError from the CPU allocator)."""
    text = str(error)
    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in text or "out of memory" in text


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


def _script():
    """This script as it was started (``python path/to/tv_training.py``), so a printed command pastes."""
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
    return " ".join(shlex.quote(a) for a in ["python", _script(), *kept, "--test-only", "--weights", checkpoint])


def resume_command(argv, checkpoint):
    """The command line that continues an interrupted run: the same options plus --resume."""
    kept = _without(argv, ("--resume",))
    launcher = ["python"]
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
            from report import remove_partial  # imported already by then: no import work in the handler

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
