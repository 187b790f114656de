"""Side-by-side speed benchmark: the tutorial's reference behaviour against this project's defaults.

    python benchmarks/bench.py                      # CPU (or --device cuda), ~15 min on 2 cores
    python benchmarks/bench.py --quick              # a smoke run at small sizes, a few minutes
    python benchmarks/bench.py --phases compile     # does torch.compile pay? (~6 min)

One run times, on the same synthetic Penn-Fudan-sized data, from the same initial weights
(the pretrained layout of ``get_model_instance_segmentation(2, weights="layout")``: frozen
BatchNorm, 3 trainable ResNet stages, random values -- nothing is downloaded):

(a) one training step at the tutorial's size (min_size 800 / max_size 1333, batch 2), inside a
    real DataLoader loop (the time includes waiting for the batch);
(b) one full evaluation pass over ``--eval-images`` test images;
(c) a whole epoch, train + evaluate, on a small subset (``--epoch-train`` / ``--epoch-test``
    images at ``--epoch-min-size``), as a fresh one-epoch run: loaders and (ours) the COCO
    ground truth are built inside the timed region.

Configurations (each phase runs each configuration in its own worker process, so the peak
RSS is per configuration and phase; ``--reuse-workers``, for smoke runs, keeps one per
configuration for all phases; the parent interleaves the repeats A B B A A B ...):

reference  torchvision's references/detection + the tutorial, reproduced: evaluation under
           ``torch.set_num_threads(1)``, COCO ground truth rebuilt at every evaluation, 4
           non-persistent DataLoader workers, torchvision's mask pasting, NCHW, fp32, and the
           OpenMP runtime's default wait policy.
ours       this project's defaults (tv_training.py / speedups.py): folded frozen BatchNorm, RoI pooling
           as a weighted gather, fast mask pasting, channels_last on CPU, workers capped at the
           core count and persistent, ground truth built once, evaluation threads untouched.
ours_amp   ours + ``--amp`` (training under bfloat16 autocast on CPU, float16 + GradScaler on
           CUDA; evaluation stays fp32, as in tv_training.py); opt-in (``--configs``).
ours_malloc
           ours + glibc malloc told to serve big blocks from its heap and never trim it, so freed
           pages stay resident for later tensors (fewer page faults, more fragmentation); a
           measured candidate, not a project default (``--configs``).

(d) ``--phases compile`` (not in the default run) answers "does torch.compile pay?": ours against
ours with ``torch.compile`` on the model's backbone (ResNet + FPN, nearly all of a step's FLOPs),
each a fresh process, ``--compile-steps`` training steps at the (c) size on varied images, steps
alternating between the two, compile and recompile time included. It prints both totals, the
steady-state step times and how many steps it takes to win the compile time back, next to the
tutorial's two epochs (120 steps).

(e) ``--phases photo`` (in the default run): one ``--predict`` of a ``--photo-size`` photo
(4000x3000, a phone's 12 megapixels) with the demo's small model set to keep 100 detections and
``--score-threshold 0``, each run a fresh process whose peak RSS is read when it exits. The
reference is torchvision's full-image masks and the tutorial-era predict (every mask pasted at
full size, thresholded and drawn from there); ours is ``outputs.predict`` (masks pasted inside
their boxes and encoded through one image-sized buffer, ``speedups.compact_masks``).

(f) ``--phases demo`` (in the default run): the demo's training step -- its small Mask R-CNN,
AdamW with clipping, batches of 2 demo-sized images -- with torchvision's stock modules
(``as_reference_model``: no speed-ups, AdamW one parameter at a time) against ours (fused AdamW),
the same seeded weights and batches; ``ours_amp`` in ``--configs`` adds the step the demo takes on
a CPU with bf16 instructions. It prints s/step, the ratio, and the convolutions' share of a
profiled step with their FLOP rate next to the fp32 convolution peak measured in the same worker.

Both see identical batches (seeded sampler, no random flip: a flip costs ~1 ms and would make
the two runs' data differ), so losses and COCO numbers can be compared directly.
Results: a table on stdout, everything in ``--out``/bench.json, worker logs in ``--out``/*.log.
"""

import argparse
import contextlib
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ("reference", "ours", "ours_amp", "ours_malloc")
PHASES = ("step", "eval", "epoch")  # the table; (d) compile, (e) photo and (f) demo report on their own
TUTORIAL_STEPS_PER_EPOCH = 60  # the tutorial: 170 images, 50 held out, 120 to train on in batches of 2
TUTORIAL_WORKERS = 4


# =======================================================================================
# Worker side: one process per (phase, configuration), driven over stdin/stdout
# =======================================================================================

def _import_project(config):
    """Import torch and the project; returns the OMP_WAIT_POLICY the OpenMP runtime started with.

    Every configuration starts with the runtime's stock wait policy (the reference's worker drops
    the variable; ours keeps the parent's, as ``python tv_training.py`` does).
    """
    sys.path.insert(0, ROOT)
    policy = os.environ.get("OMP_WAIT_POLICY", "(unset: runtime default)")
    import torch  # noqa: F401
    import tv_training  # noqa: F401
    return policy


def keep_freed_memory():
    """glibc malloc: serve big blocks from the heap instead of fresh mmaps, and never trim it.

    By default each big tensor PyTorch frees on the CPU goes back to the kernel, and the next one
    faults in new zero-filled pages (about 1.4 million minor faults per 800-px training step here).
    With this, freed pages stay resident and later tensors reuse them where they fit; the price is
    heap fragmentation, i.e. a higher peak RSS. Affects the allocations made after it (the worker
    calls it before importing torch). The same as MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError as e:
        raise RuntimeError(f"ours_malloc needs glibc (libc.so.6): {e}") from e
    m_trim_threshold, m_mmap_max = -1, -4  # mallopt parameter numbers from glibc's malloc.h
    if not (libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2 ** 31 - 1)):
        raise RuntimeError("ours_malloc: glibc mallopt refused M_MMAP_MAX / M_TRIM_THRESHOLD")


def reference_evaluate(model, data_loader, device):
    """torchvision's evaluate: one thread for the whole evaluation, ground truth rebuilt from the dataset."""
    import torch

    import engine

    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return engine.evaluate(model, data_loader, device)  # coco_gt=None: get_coco_api_from_dataset again
    finally:
        torch.set_num_threads(n_threads)


class Worker:
    """State of one configuration in one phase; ``cmd_*`` methods answer the parent's commands."""

    def __init__(self, config, spec, omp_wait_policy=None):
        import torch

        self.config, self.spec = config, spec
        self.omp_wait_policy = omp_wait_policy  # what the OpenMP runtime started with (for the report)
        self.reference = config == "reference"
        self.amp = config == "ours_amp"
        self.device = torch.device(spec["device"])
        self.pool_train, self.pool_test = spec["train_indices"], spec["test_indices"]
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    # ----- building blocks, config by config -------------------------------------------
    def _sync(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _autocast(self):
        import torch

        import engine

        return torch.autocast(self.device.type, dtype=engine.autocast_dtype(self.device.type), enabled=self.amp)

    def build_model(self, min_size, max_size):
        import torch

        import model_weights
        import tv_training

        model = model_weights.build_detector(tv_training.get_model_instance_segmentation, "maskrcnn", 2, "layout",
                                             min_size=min_size, max_size=max_size)  # stock torchvision modules
        model.load_state_dict(torch.load(self.spec["init_weights"], map_location="cpu", weights_only=True))
        if self.reference:
            return model.to(self.device)
        import speedups

        model = model_weights.prepare_for_device(model, self.device, self.spec["channels_last"])
        return speedups.compact_masks(model)  # evaluation as tv_training.main does it: masks as RLE

    def datasets(self, train_indices, test_indices):
        import torch

        import tv_training

        root = self.spec["data_path"]
        # no random flip in either configuration (see the module docstring)
        train = tv_training.PennFudanDataset(root, tv_training.get_transform(train=False))
        test = tv_training.PennFudanDataset(root, tv_training.get_transform(train=False))
        return torch.utils.data.Subset(train, train_indices), torch.utils.data.Subset(test, test_indices)

    def loaders(self, train_ds, test_ds):
        """The tutorial's two DataLoaders (reference) or dataset_formats.make_loaders (ours)."""
        import torch

        import utils
        from dataset_formats import make_loaders

        seed = self.spec["seed"]
        if self.reference:
            # the tutorial: shuffle=True, num_workers=4 (not persistent); here with a seeded sampler
            sampler = torch.utils.data.RandomSampler(train_ds, generator=torch.Generator().manual_seed(seed))
            train = torch.utils.data.DataLoader(train_ds, batch_size=self.spec["batch_size"], sampler=sampler,
                                                num_workers=TUTORIAL_WORKERS, collate_fn=utils.collate_fn)
            test = torch.utils.data.DataLoader(test_ds, batch_size=1, shuffle=False,
                                               num_workers=TUTORIAL_WORKERS, collate_fn=utils.collate_fn)
            return train, test
        workers = min(TUTORIAL_WORKERS, os.cpu_count() or 1)  # what tv_training.main does with -j 4
        train, test, _, _ = make_loaders(train_ds, test_ds, self.spec["batch_size"], workers, False, seed,
                                                     pin_memory=self.device.type == "cuda")
        return train, test

    def evaluate(self, model, loader, coco_gt):
        """The reference's evaluate (one thread, ground truth rebuilt) or ours."""
        import engine

        if self.reference:
            return reference_evaluate(model, loader, self.device)
        return engine.evaluate(model, loader, self.device, coco_gt=coco_gt)  # fp32, also for ours_amp (as --amp)

    def _train_step(self, images, targets):
        """One iteration of train_one_epoch: forward, loss.item(), backward, optimizer step."""
        import engine

        images, targets = engine._to_device(images, targets, self.device)
        with self._autocast():
            loss_dict = self.model(images, targets)
            losses = sum(loss_dict.values())
        loss_value = losses.item()
        self.optimizer.zero_grad()
        if self.scaler is not None:
            self.scaler.scale(losses).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            losses.backward()
            self.optimizer.step()
        self._sync()
        return loss_value

    def _optimizer(self, model, lr):
        import torch

        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=0.0005)  # the tutorial's

    # ----- commands ------------------------------------------------------------------------
    def cmd_info(self):
        import torch

        return dict(config=self.config, pid=os.getpid(), torch=torch.__version__, threads=torch.get_num_threads(),
                    interop_threads=torch.get_num_interop_threads(),
                    omp_wait_policy=self.omp_wait_policy)

    def cmd_peak(self, repeats=3):
        """Best-of-N throughput of a big sgemm and a big 3x3 convolution (both formats), in FLOP/s."""
        import torch
        import torch.nn.functional as F

        dev = self.device
        n = 4096 if dev.type == "cuda" else 2048
        a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
        best_mm = 0.0
        for _ in range(repeats + 1):
            self._sync()
            t = time.perf_counter()
            a @ b
            self._sync()
            best_mm = max(best_mm, 2 * n ** 3 / (time.perf_counter() - t))
        c, hw = 256, (100, 168) if dev.type == "cpu" else (200, 336)
        w = torch.randn(c, c, 3, 3, device=dev)
        flops = 2 * c * c * 9 * hw[0] * hw[1]
        best_conv = {}
        with torch.inference_mode():
            for fmt in (torch.contiguous_format, torch.channels_last):
                x = torch.randn(1, c, *hw, device=dev).contiguous(memory_format=fmt)
                wf = w.contiguous(memory_format=fmt)
                best = 0.0
                for _ in range(repeats + 1):
                    self._sync()
                    t = time.perf_counter()
                    F.conv2d(x, wf, padding=1)
                    self._sync()
                    best = max(best, flops / (time.perf_counter() - t))
                best_conv["channels_last" if fmt is torch.channels_last else "nchw"] = best
        return dict(sgemm=best_mm, sgemm_n=n, conv=best_conv, conv_shape=[1, c, *hw])

    def cmd_setup_step(self):
        import torch

        import training_run

        torch.manual_seed(self.spec["seed"])
        self.model = self.build_model(self.spec["min_size"], self.spec["max_size"])
        self.model.train()
        self.optimizer = self._optimizer(self.model, self.spec["step_lr"])
        self.scaler = training_run.make_grad_scaler(self.device, self.amp)
        train_ds, test_ds = self.datasets(self.pool_train, self.pool_test[:1])
        self.train_loader, _ = self.loaders(train_ds, test_ds)
        self.batches = iter(self.train_loader)  # workers start here, as at the start of an epoch
        self.kept = []
        for _ in range(self.spec["warmup"]):
            self.cmd_step(keep=False)
        return self.cmd_info()

    def cmd_step(self, keep=True):
        """Time one loop iteration: wait for the batch, then forward/backward/step."""
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = time.perf_counter()
        images, targets = next(self.batches)
        wait = time.perf_counter() - t
        loss = self._train_step(images, targets)
        seconds = time.perf_counter() - t
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        if keep and self.spec["flops"]:
            self.kept.append([int(t["image_id"]) for t in targets])  # to rebuild the batch, not to hold it
        return dict(seconds=seconds, data_wait=wait, loss=loss, shapes=[list(i.shape) for i in images],
                    minor_page_faults=faults)

    def cmd_profile(self, rows=15):
        """torch.profiler over one training step (the next batch): the top ops by self time, and
        how much of the step's wall time the device was busy (CUDA) or the ops ran (CPU)."""
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        images, targets = next(self.batches)
        self._sync()
        t = time.perf_counter()
        with profile(activities=activities) as prof:
            self._train_step(images, targets)
        wall = time.perf_counter() - t
        key = "self_device_time_total" if self.device.type == "cuda" else "self_cpu_time_total"
        events = prof.key_averages()
        table = events.table(sort_by=key, row_limit=rows, max_name_column_width=48)
        busy = sum(getattr(e, key) for e in events)  # microseconds
        return dict(table=table, wall_seconds=wall, busy_seconds=busy / 1e6)

    def cmd_flops(self):
        """FLOPs (torch.utils.flop_counter) of forward + backward on each timed batch."""
        from torch.utils.flop_counter import FlopCounterMode

        import engine

        import utils

        base = self.train_loader.dataset.dataset  # the PennFudanDataset under the Subset
        counts = []
        for image_ids in self.kept:
            images, targets = utils.collate_fn([base[i] for i in image_ids])
            images, targets = engine._to_device(images, targets, self.device)
            with FlopCounterMode(display=False) as counter:
                with self._autocast():
                    losses = sum(self.model(images, targets).values())
                losses.backward()
            self.optimizer.zero_grad()
            counts.append(counter.get_total_flops())
        return counts

    # ----- (f) the demo's training step -------------------------------------------------------
    def cmd_setup_demo(self):
        """(f) the demo's model (seeded random init) and recipe on demo-sized images: torchvision's
        stock modules (reference) or this project's (ours); the same batches for both, no flips."""
        import torch

        import demo
        import model_weights
        import training_run
        import tv_training
        import utils

        kwargs, anchors = demo.model_settings("maskrcnn_resnet18")
        recipe = demo.DEMO_RECIPE
        spec = model_weights.model_spec("maskrcnn_resnet18", 2, "none",
                                        dict(min_size=recipe["min_size"], max_size=recipe["max_size"], **kwargs), anchors)
        torch.manual_seed(self.spec["seed"])
        model = model_weights.build_model(tv_training.MODELS, spec, None)
        self.model = model.to(self.device) if self.reference else \
            model_weights.prepare_for_device(model, self.device, self.spec["channels_last"])
        self.model.train()
        if self.reference:  # torchvision's train.py: one AdamW call per parameter per operation
            params = [p for p in self.model.parameters() if p.requires_grad]
            self.optimizer = torch.optim.AdamW(params, lr=recipe["lr"], weight_decay=recipe["weight_decay"])
        else:
            self.optimizer = training_run.make_optimizer(self.model, "adamw", recipe["lr"], 0.0, recipe["weight_decay"])
        dataset = tv_training.PennFudanDataset(self.spec["demo_data_path"], tv_training.get_transform(train=False))
        self.demo_batches = [utils.collate_fn([dataset[i], dataset[i + 1]]) for i in range(0, len(dataset) - 1, 2)]
        self.demo_next = 0
        for _ in range(self.spec["warmup"]):
            self.cmd_demo()
        return self.cmd_info()

    def _demo_step(self):
        import torch

        import demo
        import engine

        images, targets = self.demo_batches[self.demo_next % len(self.demo_batches)]
        self.demo_next += 1
        images, targets = engine._to_device(images, targets, self.device)
        with self._autocast():  # ours_amp: the demo's own setting on a CPU with bf16 instructions
            losses = sum(self.model(images, targets).values())
        self.optimizer.zero_grad()
        losses.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), demo.DEMO_RECIPE["clip_grad_norm"])
        self.optimizer.step()
        self._sync()
        return losses.item()

    def cmd_demo(self):
        t = time.perf_counter()
        loss = self._demo_step()
        return dict(seconds=time.perf_counter() - t, loss=loss)

    def cmd_demo_convs(self):
        """The next demo step under the profiler (the convolutions' own time), then the same batch
        under a FLOP counter (the convolutions' FLOPs)."""
        from torch.profiler import ProfilerActivity, profile
        from torch.utils.flop_counter import FlopCounterMode

        cuda = self.device.type == "cuda"
        batch = self.demo_next
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
            t = time.perf_counter()
            self._demo_step()
            wall = time.perf_counter() - t
        key = "self_device_time_total" if cuda else "self_cpu_time_total"
        conv_us = sum(getattr(e, key) for e in prof.key_averages() if "convolution" in e.key)
        self.demo_next = batch
        with FlopCounterMode(display=False) as counter:
            self._demo_step()
        flops = counter.get_flop_counts().get("Global", {})
        conv_flops = sum(v for op, v in flops.items() if "convolution" in str(op))
        return dict(wall_seconds=wall, conv_seconds=conv_us / 1e6, conv_flops=conv_flops,
                    total_flops=counter.get_total_flops())

    def cmd_setup_eval(self):
        import torch

        from coco_utils import get_coco_api_from_dataset

        self.model = self.build_model(self.spec["min_size"], self.spec["max_size"])
        self.model.eval()
        _, test_ds = self.datasets(self.pool_train[:2], self.pool_test[: self.spec["eval_images"]])
        _, self.test_loader = self.loaders(test_ds, test_ds)
        t = time.perf_counter()
        self.coco_gt = None if self.reference else get_coco_api_from_dataset(test_ds)
        gt_seconds = time.perf_counter() - t
        with torch.inference_mode():  # warm-up: one image
            self.model([test_ds[0][0].to(self.device)])
        self._sync()
        return dict(self.cmd_info(), gt_once_seconds=gt_seconds)

    def cmd_eval(self, capture=False):
        """One evaluation pass; with ``capture``, also the detections (their encoding is not timed)."""
        import outputs as project_outputs

        detections, spent = [], [0.0]
        image_ids = [int(i) for i in self.test_loader.dataset.indices]  # PennFudanDataset: image_id = index

        def keep(module, inputs, outputs):
            t = time.perf_counter()
            for out in outputs:
                detections.append(compact_detections(image_ids[len(detections)], out))
            spent[0] += time.perf_counter() - t

        hook = self.model.register_forward_hook(keep) if capture else None
        try:
            t = time.perf_counter()
            evaluator = self.evaluate(self.model, self.test_loader, self.coco_gt)
            self._sync()
            seconds = time.perf_counter() - t - spent[0]
        finally:
            if hook is not None:
                hook.remove()
        result = dict(seconds=seconds, coco=project_outputs.coco_summary(evaluator))
        if capture:
            result["detections"] = detections
        return result

    def cmd_setup_epoch(self):
        import copy

        import torch

        torch.manual_seed(self.spec["seed"])
        self.model = self.build_model(self.spec["epoch_min_size"], self.spec["epoch_max_size"])
        self.initial_state = copy.deepcopy(self.model.state_dict())
        self.epoch_train, self.epoch_test = self.datasets(self.pool_train[: self.spec["epoch_train"]],
                                                          self.pool_test[: self.spec["epoch_test"]])
        # warm-up, weights untouched: one forward/backward on a training batch, one inference
        import utils

        images, targets = utils.collate_fn([self.epoch_train[i] for i in range(self.spec["batch_size"])])
        optimizer = self._optimizer(self.model, 0.0)
        self.model.train()
        import engine

        images, targets = engine._to_device(images, targets, self.device)
        with self._autocast():
            sum(self.model(images, targets).values()).backward()
        optimizer.zero_grad()
        self.model.eval()
        with torch.inference_mode():
            self.model([self.epoch_test[0][0].to(self.device)])
        self._sync()
        return self.cmd_info()

    def cmd_epoch(self):
        """A fresh one-epoch run from the same weights: loaders, ground truth, train, evaluate."""
        import torch

        import engine
        import outputs
        import training_run
        from coco_utils import get_coco_api_from_dataset

        self.model.load_state_dict(self.initial_state)
        torch.manual_seed(self.spec["seed"])
        optimizer = self._optimizer(self.model, self.spec["lr"])
        lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.1)
        scaler = training_run.make_grad_scaler(self.device, self.amp)
        history = []
        t0 = time.perf_counter()
        train_loader, test_loader = self.loaders(self.epoch_train, self.epoch_test)
        coco_gt = None if self.reference else get_coco_api_from_dataset(self.epoch_test)
        try:
            engine.train_one_epoch(self.model, optimizer, train_loader, self.device, 0, print_freq=10,
                                   scaler=scaler, loss_history=history)
        except engine.NonFiniteLossError as e:
            return dict(error=str(e), losses=[r["loss"] for r in history])
        lr_scheduler.step()
        t1 = time.perf_counter()
        evaluator = self.evaluate(self.model, test_loader, coco_gt)
        self._sync()
        t2 = time.perf_counter()
        del train_loader, test_loader  # ours: stops the persistent workers (outside the timing)
        return dict(seconds=t2 - t0, train_seconds=t1 - t0, eval_seconds=t2 - t1,
                    losses=[r["loss"] for r in history], coco=outputs.coco_summary(evaluator))

    def cmd_setup_compile(self, compiled):
        """(d) A fresh model at the (c) size; ``compiled`` wraps its backbone in torch.compile,
        which compiles lazily: inside the first timed steps."""
        import torch

        torch.manual_seed(self.spec["seed"])
        self.model = self.build_model(self.spec["epoch_min_size"], self.spec["epoch_max_size"])
        self.model.train()
        self.optimizer = self._optimizer(self.model, self.spec["step_lr"])
        self.scaler = None
        if compiled:
            # the backbone only: the detection heads' data-dependent shapes break graphs
            dynamic = True if self.spec["compile_dynamic"] else None  # None: PyTorch's automatic dynamic shapes
            self.model.backbone = torch.compile(self.model.backbone, dynamic=dynamic)
        self.compile_data, _ = self.datasets(self.pool_train, [])
        return dict(self.cmd_info(), compiled=compiled)

    def cmd_compile_step(self, i):
        """(d) Training step ``i`` on batch ``i`` of the training pool (loaded outside the timing)."""
        import utils

        bs, n = self.spec["batch_size"], len(self.compile_data)
        images, targets = utils.collate_fn([self.compile_data[(i * bs + k) % n] for k in range(bs)])
        t = time.perf_counter()
        loss = self._train_step(images, targets)
        return dict(seconds=time.perf_counter() - t, loss=loss, shapes=[list(im.shape) for im in images])

    def cmd_memory(self):
        import torch

        out = dict(peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   children_peak_rss_mib=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
        if self.device.type == "cuda":
            out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        return out


def compact_detections(image_id, output):
    """One image's detections as JSON-friendly lists (masks as COCO RLE of mask > 0.5)."""
    import numpy as np
    from pycocotools import mask as coco_mask

    boxes = output["boxes"].detach().float().cpu()
    det = dict(image_id=image_id, boxes=boxes.tolist(), scores=output["scores"].detach().float().cpu().tolist(),
               labels=output["labels"].cpu().tolist())
    if "masks_rle" in output:  # speedups.compact_masks: already the RLEs of mask > 0.5
        det["masks"] = [dict(size=list(r["size"]), counts=r["counts"]) for r in output["masks_rle"]]
        det["size"] = list(output["masks_rle"][0]["size"]) if output["masks_rle"] else None
    elif "masks" in output:
        masks = (output["masks"].detach().float().cpu()[:, 0] > 0.5).numpy().astype(np.uint8)
        rles = coco_mask.encode(np.asfortranarray(masks.transpose(1, 2, 0))) if len(masks) else []
        det["masks"] = [dict(size=list(r["size"]), counts=r["counts"].decode("ascii")) for r in rles]
        det["size"] = list(masks.shape[1:])
    return det


def agreement(reference, other, top_k=20):
    """COCO AP of ``other``'s detections scored against the reference's own most confident ones.

    With random initial weights the true AP is ~0 for both configurations, which would hide any
    change; taking the reference's confident detections as ground truth makes the comparison
    sharp: the reference scored against itself gives ~1.000 (degenerate boxes and empty masks
    are left out of the ground truth, ties in score can cost a little), and a configuration
    with other detections scores lower.
    """
    import contextlib
    import io

    from pycocotools import mask as coco_mask
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    # one score threshold for all images (top_k per image on average): every kept detection then
    # ranks above every dropped one, so the reference against itself gives a precision of 1
    ranked = sorted(((-score, i, j) for i, det in enumerate(reference) for j, score in enumerate(det["scores"])))
    chosen = {(i, j) for _, i, j in ranked[: top_k * len(reference)]}
    out = {}
    for iou in ("bbox", "segm"):
        images, anns, results = [], [], []
        for i, det in enumerate(reference):
            height, width = det.get("size", [0, 0])
            images.append(dict(id=det["image_id"], height=height, width=width))
            for j in (j for j in range(len(det["scores"])) if (i, j) in chosen):
                x0, y0, x1, y1 = det["boxes"][j]
                ann = dict(id=len(anns) + 1, image_id=det["image_id"], category_id=det["labels"][j], iscrowd=0,
                           bbox=[x0, y0, x1 - x0, y1 - y0], area=(x1 - x0) * (y1 - y0))
                if iou == "segm":
                    if "masks" not in det:
                        break
                    ann["segmentation"] = det["masks"][j]
                    ann["area"] = float(coco_mask.area(det["masks"][j]))
                if ann["area"] >= 1:
                    anns.append(ann)
        for det in other:
            for j, score in enumerate(det["scores"]):
                res = dict(image_id=det["image_id"], category_id=det["labels"][j], score=score)
                if iou == "bbox":
                    x0, y0, x1, y1 = det["boxes"][j]
                    res["bbox"] = [x0, y0, x1 - x0, y1 - y0]
                elif "masks" in det:
                    res["segmentation"] = det["masks"][j]
                else:
                    continue
                results.append(res)
        if not results or not anns:
            continue
        gt = COCO()
        gt.dataset = dict(images=images, annotations=anns,
                          categories=[dict(id=c) for c in sorted({a["category_id"] for a in anns})])
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
            evaluator = COCOeval(gt, gt.loadRes(results), iou)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        out[iou] = float(evaluator.stats[0])
    return out


def worker_main(config, spec_path):
    # The protocol uses the original stdout; everything the project prints goes to stderr (the log).
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    if config == "ours_malloc":
        keep_freed_memory()
    omp_wait_policy = _import_project(config)
    with open(spec_path) as f:
        spec = json.load(f)
    worker = Worker(config, spec, omp_wait_policy)
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "quit":
            proto.write(json.dumps({"ok": True, "result": None}) + "\n")
            break
        print(f"[{config}] {msg['cmd']}", flush=True)
        try:
            reply = {"ok": True, "result": getattr(worker, "cmd_" + msg["cmd"])(**msg.get("args", {}))}
        except Exception:  # reported to the parent, which stops the run
            reply = {"ok": False, "error": traceback.format_exc()}
        proto.write(json.dumps(reply) + "\n")


# =======================================================================================
# Parent side
# =======================================================================================

class WorkerProcess:
    def __init__(self, config, spec_path, log_path):
        env = dict(os.environ)
        if config == "reference":
            env.pop("OMP_WAIT_POLICY", None)  # the stock OpenMP behaviour
        self.config = config
        self.log = open(log_path, "a")
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", config, spec_path],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=env, cwd=ROOT)

    def call(self, cmd, **args):
        self.proc.stdin.write(json.dumps({"cmd": cmd, "args": args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.config} worker died during {cmd}; see {self.log.name}")
        reply = json.loads(line)
        if not reply["ok"]:
            raise RuntimeError(f"{self.config} worker failed in {cmd}:\n{reply['error']}")
        return reply["result"]

    def ask_to_quit(self):
        try:
            self.call("quit")
        except Exception:  # a dead worker cannot answer: stop it
            self.proc.kill()

    def wait(self):
        try:
            self.proc.wait(timeout=120)
        finally:
            self.log.close()


def interleaved(configs, repeats):
    """A B, B A, A B, ...: each round alternates which configuration goes first."""
    for r in range(repeats):
        yield r, (configs if r % 2 == 0 else configs[::-1])


def close_all(procs):
    """Ask every worker process to quit (killing the ones that cannot answer), then wait for all of
    them: they tear down side by side (a worker's exit takes up to a second)."""
    for p in procs.values():
        p.ask_to_quit()
    for p in procs.values():
        p.wait()


def run_phase(phase, configs, repeats, spec_path, out_dir, extra=None, count_flops=False, profile=False,
              procs=None):
    """Start one worker per configuration, set both up, interleave the repeats, collect memory.

    ``procs``: running workers to use instead (one per configuration, left running)."""
    fresh = procs is None
    if fresh:
        procs = {c: WorkerProcess(c, spec_path, os.path.join(out_dir, f"{phase}_{c}.log")) for c in configs}
    result = {c: dict(runs=[]) for c in configs}
    try:
        for c in configs:
            print(f"  [{phase}] setting up {c} ...", flush=True)
            result[c]["setup"] = procs[c].call(f"setup_{phase}")
        if extra == "peak":
            for c in configs:
                result[c]["peak"] = procs[c].call("peak")
        for r, order in interleaved(configs, repeats):
            for c in order:
                load = os.getloadavg()[0]
                run = procs[c].call(phase, **({"capture": True} if phase == "eval" and r == repeats - 1 else {}))
                run["loadavg_1min_before"] = load
                result[c]["runs"].append(run)
                print(f"  [{phase}] repeat {r + 1}/{repeats} {c}: {run.get('seconds', float('nan')):.2f} s"
                      + (f"  ({run['error']})" if "error" in run else ""), flush=True)
        for c in configs:
            result[c]["memory"] = procs[c].call("memory")  # before the FLOP count, which adds its own
        if phase == "demo":
            for c in configs:
                result[c]["convs"] = procs[c].call("demo_convs")
        if profile:
            for c in configs[1:]:
                print(f"  [{phase}] profiling one step ({c}) ...", flush=True)
                result[c]["profile"] = procs[c].call("profile")
        if count_flops:
            flop_config = "ours" if "ours" in configs else configs[-1]
            print(f"  [{phase}] counting FLOPs ({flop_config}) ...", flush=True)
            result["flops"] = procs[flop_config].call("flops")
    finally:
        if fresh:
            close_all(procs)
    return result


def run_compile_phase(steps, spec_path, out_dir):
    """(d) ours eager vs ours + torch.compile, fresh processes, steps alternating between them."""
    variants = ("eager", "compiled")
    procs = {v: WorkerProcess("ours", spec_path, os.path.join(out_dir, f"compile_{v}.log")) for v in variants}
    result = {v: dict(runs=[]) for v in variants}
    try:
        for v in variants:
            print(f"  [compile] setting up {v} ...", flush=True)
            result[v]["setup"] = procs[v].call("setup_compile", compiled=v == "compiled")
        for i, order in interleaved(list(variants), steps):
            for v in order:
                run = procs[v].call("compile_step", i=i)
                result[v]["runs"].append(run)
                print(f"  [compile] step {i + 1}/{steps} {v}: {run['seconds']:.2f} s", flush=True)
        for v in variants:
            result[v]["memory"] = procs[v].call("memory")
    finally:
        close_all(procs)
    return result


def make_photo(size, out_dir, seed=0):
    """(e) a synthetic street photo of ``size`` (width, height) as JPEG, and a demo-model checkpoint
    whose settings keep 100 detections (random weights, no score floor)."""
    sys.path.insert(0, ROOT)
    import numpy as np
    import torch
    from PIL import Image

    import demo
    import model_weights
    import tv_training
    from synthetic_data import make_synthetic_image

    width, height = size
    photo, weights = os.path.join(out_dir, f"photo_{width}x{height}.jpg"), os.path.join(out_dir, "photo_model.pth")
    if not os.path.exists(photo):
        small, _ = make_synthetic_image(np.random.default_rng(seed), max(height // 4, 64), max(width // 4, 48))
        Image.fromarray(small).resize((width, height), Image.BILINEAR).save(photo, quality=92)
    kwargs, anchors = demo.model_settings("maskrcnn_resnet18")
    kwargs.update(min_size=128, max_size=224, box_detections_per_img=100, box_score_thresh=0.0, box_nms_thresh=0.95,
                  rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=1000)
    spec = model_weights.model_spec("maskrcnn_resnet18", 2, "none", kwargs, anchors)
    torch.manual_seed(seed)
    model = model_weights.build_model(tv_training.MODELS, spec, None)
    torch.save({"model": model.state_dict(), "model_spec": spec}, weights)
    return photo, weights


def reference_predict(model, path, device, out_dir):
    """The tutorial-era --predict on a stock model: full-image float masks, each thresholded and
    encoded from its full-size copy, the overlay drawn from all of them (score threshold 0)."""
    import torch
    from pycocotools import mask as mask_util
    from torchvision.transforms.v2 import functional as F
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    import outputs

    image = F.to_dtype(outputs.read_photo(path), torch.float32, scale=True)
    with torch.inference_mode():
        pred = {k: v.cpu() for k, v in model([image.to(device)])[0].items()}
    detections = []
    for j in range(len(pred["scores"])):
        binary = (pred["masks"][j, 0] > 0.5).numpy().astype("uint8")
        rle = mask_util.encode(binary.copy(order="F"))
        detections.append(dict(box_xyxy=pred["boxes"][j].tolist(), score=float(pred["scores"][j]),
                               mask_rle=dict(size=list(rle["size"]), counts=rle["counts"].decode("ascii"))))
    outputs.write_json_atomic(dict(image=path, detections=detections), os.path.join(out_dir, "reference.json"))
    drawn = (255.0 * (image - image.min()) / (image.max() - image.min() + 1e-8)).to(torch.uint8)
    drawn = draw_bounding_boxes(drawn, pred["boxes"].long(), [f"pedestrian: {s:.3f}" for s in pred["scores"]],
                                colors="red", width=2)
    drawn = draw_segmentation_masks(drawn, (pred["masks"] > 0.7).squeeze(1), alpha=0.5, colors="blue")
    from PIL import Image

    Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(os.path.join(out_dir, "reference.png"))
    return len(detections)


def photo_worker(config, photo, weights, out_dir, device):
    """(e) one fresh process: build the model, predict on ``photo``, print JSON (time, detections)."""
    _import_project(config)
    import torch

    import model_weights
    import outputs
    import tv_training

    device = torch.device(device)
    checkpoint = model_weights.load_weights_file(weights)
    model = model_weights.build_model(tv_training.MODELS, model_weights.checkpoint_spec(checkpoint),
                                      checkpoint["model"])
    model = model.to(device) if config == "reference" else model_weights.prepare_for_device(model, device)
    model.eval()
    os.makedirs(out_dir, exist_ok=True)
    t = time.perf_counter()
    if config == "reference":
        n = reference_predict(model, photo, device, out_dir)
    else:
        with contextlib.redirect_stdout(sys.stderr):
            n = len(outputs.predict(model, [photo], device, out_dir, 0.0)["predictions"][0]["detections"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    print(json.dumps(dict(seconds=time.perf_counter() - t, detections=n)))


def run_photo_phase(repeats, args, out_dir):
    """(e) reference vs ours --predict of one big photo, fresh processes, interleaved."""
    photo, weights = make_photo(args.photo_size, out_dir, args.seed)
    result = {c: dict(runs=[]) for c in ("reference", "ours")}
    for r, order in interleaved(["reference", "ours"], repeats):
        for c in order:
            env = dict(os.environ)
            if c == "reference":
                env.pop("OMP_WAIT_POLICY", None)
            proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--photo-worker", c, photo, weights,
                                     os.path.join(out_dir, f"photo_{c}"), args.device],
                                    stdout=subprocess.PIPE, stderr=open(os.path.join(out_dir, f"photo_{c}.log"), "a"),
                                    cwd=ROOT, env=env, text=True)
            text = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(f"(e) {c} failed; see {out_dir}/photo_{c}.log")
            run = dict(json.loads(text.strip().splitlines()[-1]), peak_rss_mib=usage.ru_maxrss / 1024)
            result[c]["runs"].append(run)
            print(f"  [photo] repeat {r + 1}/{repeats} {c}: {run['seconds']:.2f} s, peak RSS {run['peak_rss_mib']:.0f} MiB, "
                  f"{run['detections']} detections", flush=True)
    result["size"] = list(args.photo_size)
    return result


def compile_summary(result, tutorial_steps=2 * TUTORIAL_STEPS_PER_EPOCH):
    """Totals, steady-state step times (median of the second half) and the break-even step count."""
    out = {}
    for v in ("eager", "compiled"):
        secs = [r["seconds"] for r in result[v]["runs"]]
        out[v] = dict(total=sum(secs), first=secs[0], steady=statistics.median(secs[len(secs) // 2:]),
                      slowest=max(secs))
    n = len(result["eager"]["runs"])
    saving = out["eager"]["steady"] - out["compiled"]["steady"]
    overhead = out["compiled"]["total"] - out["eager"]["total"]
    if overhead <= 0:
        break_even = n
    elif saving > 0:
        break_even = n + overhead / saving
    else:
        break_even = float("inf")
    losses = [(a["loss"], b["loss"]) for a, b in zip(result["eager"]["runs"], result["compiled"]["runs"])]
    rel = max((abs(a - b) / max(abs(a), 1e-12) for a, b in losses[:3]), default=float("nan"))
    return dict(out, steps=n, saving_per_step=saving, overhead=overhead, break_even_steps=break_even,
                tutorial_steps=tutorial_steps, pays=break_even <= tutorial_steps, first_losses_max_rel_diff=rel)


def paired_ratio(reference_runs, other_runs):
    """Median over repeats of reference time / other time; repeat i is the same batch in both."""
    return statistics.median(a["seconds"] / b["seconds"] for a, b in zip(reference_runs, other_runs)
                             if "seconds" in a and "seconds" in b)


def median_seconds(runs):
    values = [r["seconds"] for r in runs if "seconds" in r]
    return statistics.median(values) if values else float("nan")


def machine_info():
    info = dict(python=platform.python_version(), cores=os.cpu_count(), platform=platform.platform())
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")
        flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
        info["bf16_flags"] = sorted(f for f in flags if "bf16" in f or f.startswith("amx"))
    except OSError:
        info["cpu"] = platform.processor()
    info["loadavg_start"] = os.getloadavg()
    return info


def prepare(args, out_dir):
    """Synthetic data, the seeded split and the initial weights (built once, saved for the workers)."""
    sys.path.insert(0, ROOT)
    import torch

    import model_weights
    import tv_training
    from dataset_formats import pair_images_and_masks, split_indices
    from synthetic_data import make_synthetic_pennfudan

    if not os.path.isdir(os.path.join(args.data_path, "PNGImages")):
        print(f"Generating {args.num_images} synthetic Penn-Fudan-sized images in {args.data_path}", flush=True)
        make_synthetic_pennfudan(args.data_path, num_images=args.num_images, seed=args.seed)
    if "demo" in args.phases and not os.path.isdir(os.path.join(args.demo_data_path, "PNGImages")):
        import demo

        n_demo = 2 * (args.warmup + args.demo_steps + 1) + 2  # batches of 2, each step a new one
        print(f"Generating {n_demo} demo-sized synthetic images in {args.demo_data_path}", flush=True)
        make_synthetic_pennfudan(args.demo_data_path, seed=args.seed, **dict(demo.DEMO_DATA, num_images=n_demo))
    n = len(pair_images_and_masks(args.data_path))
    n_test = max(args.eval_images, args.epoch_test)
    train_idx, test_idx = split_indices(n, n_test, None, args.seed)
    need_train = max(args.epoch_train, (args.warmup + args.steps) * args.batch_size)
    if len(train_idx) < need_train:
        sys.exit(f"{args.data_path} has {n} images; need {need_train} for training + {n_test} for testing "
                 f"(use --num-images with a fresh --data-path)")
    init_path = os.path.join(out_dir, "initial_weights.pth")
    if args.weights:
        state = model_weights.load_weights_file(args.weights)["model"]
    else:
        torch.manual_seed(args.seed)
        state = model_weights.build_detector(tv_training.get_model_instance_segmentation, "maskrcnn", 2,
                                             "layout").state_dict()
    import utils

    utils.atomic_save(state, init_path)
    return train_idx, test_idx, init_path


def keep_earlier_run(out_dir):
    """Move an earlier run's results in ``out_dir`` (bench.json, bench.txt, the logs, the photo
    outputs) to ``out_dir/earlier/<that run's time>/``, so a new run replaces nothing (the logs of
    a run that failed or was stopped included); returns that folder, or None when there was none."""
    kept = [n for n in os.listdir(out_dir)
            if n in ("bench.json", "bench.txt", "photo_ours", "photo_reference") or n.endswith(".log")]
    if not kept:
        return None
    last = max(os.path.getmtime(os.path.join(out_dir, n)) for n in kept)
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.localtime(last))
    dest, n = os.path.join(out_dir, "earlier", stamp), 1
    while os.path.exists(dest):
        n += 1
        dest = os.path.join(out_dir, "earlier", f"{stamp}-{n}")
    os.makedirs(dest)
    for name in kept:
        os.replace(os.path.join(out_dir, name), os.path.join(dest, name))
    return dest


def fmt_ratio(ref, ours):
    return f"{ref / ours:.2f}x" if ours and ours == ours and ref == ref else "n/a"


def report(args, info, results, configs):
    ref, others = configs[0], configs[1:]
    lines = []
    add = lines.append
    add("")
    add(f"Machine: {info['cpu']}, {info['cores']} cores, torch {info.get('torch', '?')}, device {args.device}; "
        f"bf16 CPU flags: {', '.join(info['bf16_flags']) or 'none'}")
    add(f"Load average at start {info['loadavg_start'][0]:.2f}, at end {info['loadavg_end'][0]:.2f} "
        f"(other processes share the cores: compare the ratios, measured side by side)")
    add("")
    if any(phase in results for phase in PHASES):  # (a)-(c); (d) has its own section below
        header = f"{'phase':44s}" + "".join(f"{c:>16s}" for c in configs) + "".join(f"{'ref/' + c:>16s}" for c in others)
        add(header)
        add("-" * len(header))
        names = dict(step=f"(a) train step, {args.min_size}/{args.max_size} px, batch {args.batch_size} [s]",
                     eval=f"(b) eval pass, {args.eval_images} images, {args.min_size} px [s]",
                     epoch=f"(c) epoch {args.epoch_train}+{args.epoch_test} images, {args.epoch_min_size} px [s]")
        for phase in PHASES:
            if phase not in results:
                continue
            med = {c: median_seconds(results[phase][c]["runs"]) for c in configs}
            add(f"{names[phase]:44s}" + "".join(f"{med[c]:16.2f}" for c in configs)
                + "".join(f"{fmt_ratio(med[ref], med[c]):>16s}" for c in others))
            if phase == "step" and len(results[phase][ref]["runs"]) > 1:
                # each repeat is a different batch (sizes differ): also pair the repeats batch by batch
                paired = {c: paired_ratio(results[phase][ref]["runs"], results[phase][c]["runs"]) for c in others}
                add(f"{'    the same, median of per-batch ratios':44s}" + " " * 16 * len(configs)
                    + "".join(f"{paired[c]:>15.2f}x" for c in others))
            if phase == "epoch":  # which part holds the ratio back
                for part in ("train", "eval"):
                    runs = {c: [r for r in results[phase][c]["runs"] if f"{part}_seconds" in r] for c in configs}
                    if all(runs.values()):
                        part_med = {c: statistics.median(r[f"{part}_seconds"] for r in runs[c]) for c in configs}
                        label = "    of which training" if part == "train" else "    of which evaluation"
                        add(f"{label:44s}" + "".join(f"{part_med[c]:16.2f}" for c in configs)
                            + "".join(f"{fmt_ratio(part_med[ref], part_med[c]):>16s}" for c in others))
        add("")
        add("Peak RSS of the worker process [MiB] (DataLoader workers' largest in brackets)"
            + ("; --reuse-workers: each covers the phases before it too" if args.reuse_workers else ""))
        for phase in PHASES:
            if phase in results:
                cells = []
                for c in configs:
                    m = results[phase][c]["memory"]
                    cell = f"{m['peak_rss_mib']:.0f} ({m['children_peak_rss_mib']:.0f})"
                    if "cuda_max_allocated_mib" in m:
                        cell += f" cuda {m['cuda_max_allocated_mib']:.0f}"
                    cells.append(f"{cell:>20s}")
                add(f"  {phase:8s}" + "".join(cells))
        if "step" in results:
            faults = [statistics.median(r["minor_page_faults"] for r in results["step"][c]["runs"]) for c in configs]
            add("Minor page faults per (a) step, median: " + ", ".join(f"{c} {f:,.0f}" for c, f in zip(configs, faults)))
    if "step" in results and results["step"].get("flops"):
        flops = results["step"]["flops"]
        add("")
        add("Training step FLOPs (forward + backward, FlopCounterMode, per timed batch): "
            + ", ".join(f"{f / 1e12:.2f} T" for f in flops))
        for c in configs:
            runs = results["step"][c]["runs"]
            achieved = sum(flops[: len(runs)]) / sum(r["seconds"] for r in runs[: len(flops)])
            peak = results["step"][c].get("peak", {})
            conv = peak.get("conv", {})
            add(f"  {c:10s} achieved {achieved / 1e9:7.1f} GFLOP/s | same process: sgemm {peak.get('sgemm', 0) / 1e9:6.1f}, "
                f"conv3x3 nchw {conv.get('nchw', 0) / 1e9:6.1f}, channels_last {conv.get('channels_last', 0) / 1e9:6.1f} "
                f"GFLOP/s")
    for phase in ("eval", "epoch"):
        if phase not in results:
            continue
        add("")
        add(f"COCO AP after ({'b' if phase == 'eval' else 'c'}) {phase} (same initial weights):")
        for c in configs:
            runs = [r for r in results[phase][c]["runs"] if "coco" in r]
            if not runs:
                add(f"  {c:10s} no result ({results[phase][c]['runs'][-1].get('error', '?')})")
                continue
            coco = runs[-1]["coco"]
            extra = ""
            if phase == "epoch":
                extra = "  losses " + " ".join(f"{x:.4f}" for x in runs[-1]["losses"])
            add(f"  {c:10s} bbox AP {coco['bbox']['AP']:.4f} AP50 {coco['bbox']['AP50']:.4f} | "
                f"segm AP {coco['segm']['AP']:.4f} AP50 {coco['segm']['AP50']:.4f}{extra}")
        if phase == "eval" and results[phase].get("agreement"):
            add("  agreement: AP against the reference's own 20 x images most confident detections as ground "
                "truth (the reference itself: ~1.000)")
            for c, ap in results[phase]["agreement"].items():
                add(f"  {c:10s} bbox AP {ap.get('bbox', float('nan')):.4f} | segm AP {ap.get('segm', float('nan')):.4f}")
    for c in configs[1:]:
        prof = results.get("step", {}).get(c, {}).get("profile")
        if prof:
            what = "GPU busy" if args.device.startswith("cuda") else "ops ran"
            add("")
            add(f"Profile of one (a) training step, {c}: {prof['wall_seconds']:.3f} s wall, {what} "
                f"{prof['busy_seconds']:.3f} s ({100 * prof['busy_seconds'] / prof['wall_seconds']:.0f}%)")
            add(prof["table"].rstrip())
    if "demo" in results:
        d = results["demo"]
        ref_s, our_s = (median_seconds(d[c]["runs"]) for c in configs[:2])
        add("")
        add(f"(f) the demo's training step (its model and recipe, {len(d[configs[0]]['runs'])} steps of 2 images at "
            f"128-224 px, the same batches), median")
        add(f"  reference {ref_s:7.3f} s/step")
        for c in configs[1:]:
            add(f"  {c:9s} {median_seconds(d[c]['runs']):7.3f} s/step | ref/{c} {fmt_ratio(ref_s, median_seconds(d[c]['runs']))}")
        for c in configs[:2]:
            conv, peak = d[c]["convs"], d[c].get("peak", {}).get("conv", {})
            best_peak = max(peak.values()) if peak else float("nan")
            rate = conv["conv_flops"] / conv["conv_seconds"] if conv["conv_seconds"] else float("nan")
            add(f"  {c:9s} convolutions: {100 * conv['conv_seconds'] / conv['wall_seconds']:.0f}% of a profiled step "
                f"({conv['wall_seconds']:.3f} s), {conv['conv_flops'] / 1e9:.1f} of {conv['total_flops'] / 1e9:.1f} "
                f"GFLOP, at {rate / 1e9:.0f} GFLOP/s against a {best_peak / 1e9:.0f} GFLOP/s fp32 conv peak "
                f"measured in the same worker ({100 * rate / best_peak:.0f}%)")
    if "photo" in results:
        p = results["photo"]
        ref_s, our_s = (median_seconds(p[c]["runs"]) for c in ("reference", "ours"))
        ref_m, our_m = (max(r["peak_rss_mib"] for r in p[c]["runs"]) for c in ("reference", "ours"))
        n = p["ours"]["runs"][0]["detections"]
        add("")
        add(f"(e) --predict, one {p['size'][0]}x{p['size'][1]} photo, {n} detections, demo model, fresh process "
            f"(time without the model's start-up; peak RSS of the whole process)")
        add(f"  reference {ref_s:7.2f} s | peak RSS {ref_m:6.0f} MiB")
        add(f"  ours      {our_s:7.2f} s | peak RSS {our_m:6.0f} MiB | time {fmt_ratio(ref_s, our_s)} faster, "
            f"memory {fmt_ratio(ref_m, our_m)} smaller")
    if "compile" in results:
        c = compile_summary(results["compile"])
        add("")
        add(f"(d) torch.compile, {c['steps']} training steps at {args.epoch_min_size} px, fresh processes, compile time "
            f"included: ours eager vs ours with torch.compile(model.backbone)")
        for v in ("eager", "compiled"):
            m = results["compile"][v]["memory"]
            add(f"  {v:9s} total {c[v]['total']:7.1f} s | first step {c[v]['first']:6.1f} s | slowest {c[v]['slowest']:6.1f} s"
                f" | steady state {c[v]['steady']:5.2f} s/step | peak RSS {m['peak_rss_mib']:.0f} MiB")
        if c["saving_per_step"] > 0:
            saving = (f"saves {c['saving_per_step']:.2f} s/step "
                      f"({100 * c['saving_per_step'] / c['eager']['steady']:.1f}%) once compiled")
        else:
            saving = "is not faster once compiled"
        when = ("is never won back" if c["break_even_steps"] == float("inf")
                else f"is won back after ~{c['break_even_steps']:.0f} steps")
        add(f"  compiled {saving}; the compile time ({c['overhead']:.0f} s more over {c['steps']} steps) {when}; "
            f"the tutorial's two epochs are {c['tutorial_steps']} steps: {'pays' if c['pays'] else 'does not pay'}")
        add(f"  first losses agree to {c['first_losses_max_rel_diff']:.1e} (relative)")
    return "\n".join(lines)


def get_args_parser():
    p = argparse.ArgumentParser(description="Reference vs ours, side by side (see the module docstring).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--phases", default="step,eval,epoch,photo,demo",
                   help="comma-separated subset of step,eval,epoch,photo,demo,compile (compile: (d), photo: (e), "
                        "demo: (f) in the docstring)")
    p.add_argument("--configs", default="reference,ours",
                   help="reference first, then any of ours,ours_amp,ours_malloc (see the docstring)")
    p.add_argument("--data-path", default=os.path.join(ROOT, "data", "BenchPed"),
                   help="Penn-Fudan-style folder; synthetic images are generated there if it is missing")
    p.add_argument("--num-images", default=40, type=int, help="synthetic images to generate")
    p.add_argument("--weights", default=None, help="start from this checkpoint instead of seeded random values")
    p.add_argument("--seed", default=0, type=int)
    p.add_argument("--batch-size", default=2, type=int)
    p.add_argument("--min-size", default=800, type=int, help="(a) and (b) model input size")
    p.add_argument("--max-size", default=1333, type=int)
    p.add_argument("--warmup", default=1, type=int, help="(a) untimed steps first")
    p.add_argument("--steps", default=5, type=int,
                   help="(a) timed steps per configuration, each on a different batch")
    p.add_argument("--step-lr", default=0.005 / 1000, type=float,
                   help="(a) learning rate (the tutorial's first warm-up value: keeps random weights finite)")
    p.add_argument("--eval-images", default=10, type=int, help="(b) test images per evaluation pass")
    p.add_argument("--eval-repeats", default=2, type=int)
    p.add_argument("--epoch-train", default=8, type=int, help="(c) training images")
    p.add_argument("--epoch-test", default=4, type=int, help="(c) test images")
    p.add_argument("--epoch-min-size", default=512, type=int, help="(c) model input size")
    p.add_argument("--epoch-max-size", default=853, type=int)
    p.add_argument("--epoch-repeats", default=2, type=int)
    p.add_argument("--lr", default=1e-4, type=float,
                   help="(c) learning rate; the tutorial's 0.005 is for pretrained weights and diverges from "
                        "random values (use it with --weights)")
    p.add_argument("--compile-steps", default=12, type=int, help="(d) training steps per variant")
    p.add_argument("--photo-size", default=(4000, 3000), type=int, nargs=2, metavar=("WIDTH", "HEIGHT"),
                   help="(e) the photo's size")
    p.add_argument("--photo-repeats", default=2, type=int, help="(e) runs per configuration")
    p.add_argument("--demo-steps", default=20, type=int, help="(f) timed demo training steps per configuration")
    p.add_argument("--demo-data-path", default=os.path.join(ROOT, "data", "BenchDemoPed"),
                   help="(f) demo-sized synthetic images (generated there if missing)")
    p.add_argument("--compile-dynamic", action="store_true",
                   help="(d) torch.compile(dynamic=True): symbolic shapes from the first compile (default: off, "
                        "PyTorch's automatic dynamic shapes, which recompile once a shape changes)")
    p.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"], help="ours: memory format")
    p.add_argument("--no-flops", dest="flops", action="store_false", help="skip the FLOP count of (a)")
    p.add_argument("--profile", action="store_true",
                   help="(a) also profile one more training step of each configuration but the reference")
    p.add_argument("--reuse-workers", action="store_true",
                   help="smoke run: one worker process per configuration for (a)-(c) and (f) instead of fresh ones "
                        "per phase; starts faster, but each peak RSS then covers the phases before it too")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 384 px, 1 timed step, 3 eval images, 4+2 images per epoch, 1 repeat each, "
                        "3 compile steps, --reuse-workers")
    p.add_argument("--out", default=os.path.join(ROOT, "output", "bench"), help="bench.json and worker logs")
    return p


def run_phases(phases, configs, args, spec_path, results):
    """Run ``phases`` one after another; each one's result goes into ``results`` as it finishes."""
    repeats = dict(step=args.steps, eval=args.eval_repeats, epoch=args.epoch_repeats, demo=args.demo_steps)
    shared = None
    if args.reuse_workers and any(p in PHASES + ("demo",) for p in phases):
        shared = {c: WorkerProcess(c, spec_path, os.path.join(args.out, f"workers_{c}.log")) for c in configs}
    try:
        for phase in phases:
            print(f"Phase {phase}:", flush=True)
            if phase == "compile":
                results[phase] = run_compile_phase(args.compile_steps, spec_path, args.out)
                continue
            if phase == "photo":
                results[phase] = run_photo_phase(args.photo_repeats, args, args.out)
                continue
            results[phase] = run_phase(phase, configs, repeats[phase], spec_path, args.out,
                                       extra="peak" if phase in ("step", "demo") else None,
                                       count_flops=phase == "step" and args.flops,
                                       profile=phase == "step" and args.profile, procs=shared)
            if phase == "eval":
                captured = {c: results[phase][c]["runs"][-1].pop("detections", None) for c in configs}
                if all(captured.values()):
                    results[phase]["agreement"] = {c: agreement(captured[configs[0]], captured[c]) for c in configs}
            if phase == "step":
                shapes = {c: [r["shapes"] for r in results[phase][c]["runs"]] for c in configs}
                if any(s != shapes[configs[0]] for s in shapes.values()):
                    print("warning: the configurations trained on different batch shapes", flush=True)
    finally:
        if shared:
            close_all(shared)


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker_main(sys.argv[2], sys.argv[3])
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--photo-worker":
        return photo_worker(*sys.argv[2:7])
    args = get_args_parser().parse_args(argv)
    if args.quick:
        args.min_size, args.max_size, args.steps, args.eval_images, args.eval_repeats = 384, 640, 1, 3, 1
        args.epoch_train, args.epoch_test, args.epoch_min_size, args.epoch_max_size, args.epoch_repeats = 4, 2, 256, 427, 1
        args.compile_steps, args.photo_size, args.photo_repeats, args.demo_steps = 3, (1000, 750), 1, 3
        args.reuse_workers = True
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if configs[0] != "reference" or any(c not in CONFIGS for c in configs) or len(set(configs)) != len(configs):
        sys.exit(f"--configs: reference first, then any of {CONFIGS[1:]}")
    if any(p not in PHASES + ("photo", "demo", "compile") for p in phases):
        sys.exit(f"--phases: a subset of {PHASES + ('photo', 'demo', 'compile')}")
    os.makedirs(args.out, exist_ok=True)
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"--device {args.device}: torch {torch.__version__} sees no CUDA device "
                 "(torch.cuda.is_available() is False); run on a GPU machine or use --device cpu")
    earlier = keep_earlier_run(args.out)
    if earlier:
        print(f"The earlier run in {args.out} is kept in {earlier}", flush=True)
    info = machine_info()
    info["torch"] = torch.__version__
    try:
        train_idx, test_idx, init_path = prepare(args, args.out)
    except KeyboardInterrupt:  # data is generated in a temporary folder, the weights saved atomically
        print("\nCtrl-C: stopped while preparing the data and the initial weights; nothing was measured",
              file=sys.stderr)
        sys.exit(130)
    spec = dict(vars(args), init_weights=init_path, train_indices=train_idx, test_indices=test_idx)
    spec_path = os.path.join(args.out, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)

    results, stopped_in = {}, None
    started = time.time()
    try:
        run_phases(phases, configs, args, spec_path, results)
    except KeyboardInterrupt:  # the workers got the same Ctrl-C; run_phase's cleanup has stopped them
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish writing what was measured
        unfinished = [p for p in phases if p not in results]
        # (a press while the last workers shut down finds every phase done)
        stopped_in = f"in phase {unfinished[0]}" if unfinished else "while the workers shut down"
        if not results:
            print(f"\nCtrl-C: stopped {stopped_in}, before any phase finished; nothing was written",
                  file=sys.stderr)
            sys.exit(130)
    info["loadavg_end"] = os.getloadavg()
    info["wall_seconds"] = round(time.time() - started, 1)
    text = report(args, info, results, configs)
    print(text)
    cmd = " ".join([os.path.relpath(sys.executable, ROOT), "benchmarks/bench.py"] + (sys.argv[1:] if argv is None else argv))
    import outputs  # (prepare put the project on the path)

    outputs.write_json_atomic(dict(command=cmd, args=vars(args), machine=info, results=results),
                              os.path.join(args.out, "bench.json"))
    outputs.write_text_atomic(f"$ {cmd}\n{text}\n", os.path.join(args.out, "bench.txt"))
    print(f"\nWrote {os.path.join(args.out, 'bench.json')} and bench.txt (worker logs: {args.out}/*.log); "
          f"took {info['wall_seconds']:.0f} s")
    if stopped_in:
        print(f"Ctrl-C: stopped {stopped_in}; the phases that finished are reported above", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
