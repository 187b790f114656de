"""Logging, batching and distributed helpers with torchvision's ``references/detection/utils.py`` API.

The tutorial does ``import utils`` and uses ``utils.collate_fn``; ``engine.py`` uses the
metric loggers. Differences from the reference, kept behind the same names:

* every collective works with the gloo backend, so ``torchrun`` also runs on a CPU box
  (the reference builds CUDA tensors for its reductions);
* ``save_on_master`` writes atomically (temporary file + rename): a run killed while
  saving leaves the previous file intact;
* ``init_distributed_mode`` picks NCCL on CUDA and gloo otherwise.

Two additions, here because every set of copied helpers has this file: ``atomic_write``
(any file written whole or not at all; ``atomic_save`` and this project's outputs use it) and
``unwrap_subset`` (the dataset under ``Subset`` splits; coco_utils.py and
group_by_aspect_ratio.py use it).
"""

import builtins
import datetime
import errno
import gc
import os
import time
from collections import defaultdict, deque

import torch
import torch.distributed as dist


class SmoothedValue:
    """Track a series of values; report the median/average over a window and the global average."""

    def __init__(self, window_size=20, fmt=None):
        if fmt is None:
            fmt = "{median:.4f} ({global_avg:.4f})"
        self.deque = deque(maxlen=window_size)
        self.total = 0.0
        self.count = 0
        self.fmt = fmt

    def update(self, value, n=1):
        self.deque.append(value)
        self.count += n
        self.total += value * n

    def synchronize_between_processes(self):
        """Sum ``count`` and ``total`` over processes (the window stays local)."""
        if not is_dist_avail_and_initialized():
            return
        t = torch.tensor([self.count, self.total], dtype=torch.float64, device=_collective_device())
        dist.barrier()
        dist.all_reduce(t)
        self.count = int(t[0].item())
        self.total = t[1].item()

    @property
    def median(self):
        return torch.tensor(list(self.deque)).median().item()

    @property
    def avg(self):
        return torch.tensor(list(self.deque), dtype=torch.float32).mean().item()

    @property
    def global_avg(self):
        return self.total / self.count

    @property
    def max(self):
        return max(self.deque)

    @property
    def value(self):
        return self.deque[-1]

    def __str__(self):
        return self.fmt.format(
            median=self.median, avg=self.avg, global_avg=self.global_avg, max=self.max, value=self.value
        )


class MetricLogger:
    """A named set of ``SmoothedValue`` meters, plus ``log_every`` for progress lines."""

    def __init__(self, delimiter="\t"):
        self.meters = defaultdict(SmoothedValue)
        self.delimiter = delimiter

    def update(self, **kwargs):
        for name, value in kwargs.items():
            if value is None:
                continue
            if isinstance(value, torch.Tensor):
                value = value.item()
            if not isinstance(value, (float, int)):
                raise TypeError(f"MetricLogger.update: {name} must be a number or a 1-element tensor, "
                                f"got {type(value)}")
            self.meters[name].update(value)

    def __getattr__(self, attr):
        # only called when normal lookup fails: expose meters as attributes (metric_logger.loss)
        meters = self.__dict__.get("meters", {})
        if attr in meters:
            return meters[attr]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{attr}'")

    def __str__(self):
        return self.delimiter.join(f"{name}: {meter}" for name, meter in self.meters.items())

    def synchronize_between_processes(self):
        for meter in self.meters.values():
            meter.synchronize_between_processes()

    def add_meter(self, name, meter):
        self.meters[name] = meter

    def log_every(self, iterable, print_freq, header=None):
        """Yield from ``iterable``, printing a progress line every ``print_freq`` items and at the end.

        Line format: ``{header}  [ i/N]  eta: H:MM:SS  {meters}  time: s  data: s  [max mem: MB]``,
        then ``{header} Total time: H:MM:SS (s / it)`` once the iterable is exhausted.
        """
        header = header or ""
        start_time = time.time()
        end = time.time()
        iter_time = SmoothedValue(fmt="{avg:.4f}")
        data_time = SmoothedValue(fmt="{avg:.4f}")
        n = len(iterable)
        counter_fmt = "[{0:" + str(len(str(n))) + "d}/{1}]"
        parts = [header, counter_fmt, "eta: {eta}", "{meters}", "time: {time}", "data: {data}"]
        show_mem = torch.cuda.is_available() and torch.cuda.is_initialized()
        if show_mem:
            parts.append("max mem: {memory:.0f}")
        log_msg = self.delimiter.join(parts)
        mb = 1024.0 * 1024.0
        for i, obj in enumerate(iterable):
            data_time.update(time.time() - end)
            yield obj
            iter_time.update(time.time() - end)
            if i % print_freq == 0 or i == n - 1:
                eta = str(datetime.timedelta(seconds=int(iter_time.global_avg * (n - i))))
                fields = dict(eta=eta, meters=str(self), time=str(iter_time), data=str(data_time))
                if show_mem:
                    fields["memory"] = torch.cuda.max_memory_allocated() / mb
                print(log_msg.format(i, n, **fields))
            end = time.time()
        total_time = time.time() - start_time
        total_str = str(datetime.timedelta(seconds=int(total_time)))
        print(f"{header} Total time: {total_str} ({total_time / max(n, 1):.4f} s / it)")


def collate_fn(batch):
    """Detection batches are lists of differently sized images: keep them as tuples."""
    return tuple(zip(*batch))


def unwrap_subset(dataset, indices=None):
    """``(base, base_indices)``: the dataset under any nesting of ``torch.utils.data.Subset`` and,
    for each item of ``dataset`` (or each of ``indices`` into it), its index in ``base``.

    A split made with ``Subset`` hides what the dataset knows without decoding (its COCO
    object, image sizes, file names); this reaches it and keeps the items' order.
    """
    if indices is None:
        indices = range(len(dataset))
    while isinstance(dataset, torch.utils.data.Subset):
        indices = [dataset.indices[i] for i in indices]
        dataset = dataset.dataset
    return dataset, list(indices)


def mkdir(path):
    try:
        os.makedirs(path)
    except OSError as e:
        if e.errno != errno.EEXIST:
            raise


def setup_for_distributed(is_master):
    """Silence ``print`` on every rank but the master; ``print(..., force=True)`` prints anyway."""
    builtin_print = builtins.print

    def print(*args, **kwargs):
        force = kwargs.pop("force", False)
        if is_master or force:
            builtin_print(*args, **kwargs)

    builtins.print = print


def is_dist_avail_and_initialized():
    return dist.is_available() and dist.is_initialized()


def get_world_size():
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def get_rank():
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def is_main_process():
    return get_rank() == 0


def _collective_device():
    """Tensors in collectives must live where the backend works: CUDA for NCCL, CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def atomic_write(path, write):
    """``write(tmp)`` writes the file, then ``tmp`` is renamed over ``path``.

    ``tmp`` is ``.tmp-<pid>-<name>`` in ``path``'s folder: a rename within one file system is
    atomic, so ``path`` always holds either the old complete file or the new complete file,
    whenever the process is killed. On any exception (Ctrl-C included) the temporary file is
    removed and ``path`` is left as it was; a process killed outright leaves its ``.tmp-<pid>-``
    file, which the pid names (a second Ctrl-C during training removes it).
    """
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_save(obj, path, **kwargs):
    """``torch.save`` to a temporary file in the same folder, then rename over ``path`` (``atomic_write``).

    The data reaches the disk (fsync) before the rename: a power cut right after it must not
    leave an empty checkpoint in place of the previous one.
    """
    def write(tmp):
        with open(tmp, "wb") as f:
            torch.save(obj, f, **kwargs)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def save_on_master(obj, f, **kwargs):
    """``torch.save(obj, f, **kwargs)`` on the main process only.

    When ``f`` is a path (str or ``os.PathLike``) the save is atomic (``atomic_save``); a file
    object the caller opened is written as given, since only the caller can rename it.
    """
    if not is_main_process():
        return
    if isinstance(f, (str, os.PathLike)):
        atomic_save(obj, os.fspath(f), **kwargs)
    else:
        torch.save(obj, f, **kwargs)


def init_distributed_mode(args):
    """Set ``args.distributed``, ``rank``, ``world_size``, ``gpu``, ``dist_backend`` from the launcher.

    Reads torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` or, under ``srun`` with more
    than one task, SLURM's ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``; without
    them this is a plain single process and nothing is initialised. NCCL is used
    when CUDA is available and the run is not forced onto the CPU (``args.device == "cpu"``),
    gloo otherwise.
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        args.rank = int(os.environ["RANK"])
        args.world_size = int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
    elif "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", 1)) > 1:
        # one task per process, started by srun (a plain `python` inside a one-task job,
        # or an interactive allocation, stays a single process)
        args.rank = int(os.environ["SLURM_PROCID"])
        args.world_size = int(os.environ["SLURM_NTASKS"])
        local_rank = int(os.environ.get("SLURM_LOCALID", 0))
        # env:// needs MASTER_ADDR/MASTER_PORT, which srun does not set. For a single-node
        # job the defaults below work; a multi-node job must export MASTER_ADDR (the first
        # host of the job, e.g. `scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1`).
        if "MASTER_ADDR" not in os.environ and int(os.environ.get("SLURM_NNODES", 1)) > 1:
            raise RuntimeError("multi-node SLURM job: export MASTER_ADDR=<first host of the job> "
                               "(and optionally MASTER_PORT) before srun")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
    else:
        print("Not using distributed mode")
        args.distributed = False
        args.gpu = None
        return

    args.distributed = True
    use_cuda = torch.cuda.is_available() and str(getattr(args, "device", "cuda")) != "cpu"
    if use_cuda:
        args.gpu = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(args.gpu)
        args.dist_backend = "nccl"
    else:
        args.gpu = None
        args.dist_backend = "gloo"
    args.dist_url = getattr(args, "dist_url", None) or "env://"
    print(f"| distributed init (rank {args.rank}/{args.world_size}, backend {args.dist_backend}): {args.dist_url}",
          flush=True)
    dist.init_process_group(
        backend=args.dist_backend, init_method=args.dist_url, world_size=args.world_size, rank=args.rank
    )
    dist.barrier()
    setup_for_distributed(args.rank == 0)


def cleanup_distributed():
    """Destroy the process group set up by ``init_distributed_mode`` (no-op for a single process).

    Each rank first frees what is only held in reference cycles (a DDP wrapper kept alive by a
    caught exception's frames, say), so that the wrapper's reducer goes while its process group
    and the interpreter are still alive rather than at interpreter exit (where gloo can abort the
    process). No barrier: under --predict or --export the other ranks end at once while rank 0
    works on, for longer than a collective's timeout on a big folder.
    """
    if is_dist_avail_and_initialized():
        gc.collect()
        dist.destroy_process_group()


def all_gather(data):
    """Gather any picklable object from every process; returns a list with one entry per rank."""
    world_size = get_world_size()
    if world_size == 1:
        return [data]
    gathered = [None] * world_size
    dist.all_gather_object(gathered, data)
    return gathered


def reduce_dict(input_dict, average=True):
    """Reduce a dict of scalar tensors over processes (mean by default) so every rank logs the same values."""
    world_size = get_world_size()
    if world_size < 2:
        return input_dict
    with torch.no_grad():
        names = sorted(input_dict.keys())
        values = torch.stack([input_dict[k] for k in names])
        device = values.device
        values = values.to(_collective_device())
        dist.all_reduce(values)
        if average:
            values /= world_size
        return dict(zip(names, values.to(device)))
