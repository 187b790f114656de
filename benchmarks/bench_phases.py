"""What each phase of benchmarks/bench.py measures, inside one worker process.

``Worker`` holds one configuration's state in one phase (model, optimizer, loaders, batches) and
answers the parent's commands with ``cmd_<name>`` methods, each returning a JSON-friendly dict:

    setup_step / step / profile / flops     (a) one training step at the tutorial's size
    setup_eval / eval                       (b) one evaluation pass (``capture``: and the detections)
    setup_epoch / epoch                     (c) a fresh one-epoch run, train + evaluate
    setup_compile / compile_step            (d) eager against torch.compile(backbone)
    setup_demo / demo / demo_convs          (f) the demo's training step
    info / peak / memory                    the process: threads, fp32 peak FLOP rates, peak RSS

A configuration is "reference" (torchvision's references/detection and the tutorial, reproduced:
``reference_evaluate``, the tutorial's DataLoaders, stock modules) or one of "ours", "ours_amp",
"ours_malloc", "ours_thp", "ours_nchw", "ours_nhwc" (this project's defaults; ``ours_amp`` adds
autocast; ``ours_malloc`` and ``ours_thp`` change only glibc malloc; the last two force the memory
format). The worker process that
drives a ``Worker`` over stdin/stdout is in bench_workers.py; (e), the photo, in bench_photo.py.
Torch and the project are imported inside the functions: the worker process sets up glibc malloc
(``ours_malloc``) before torch is loaded.
"""

import os
import resource
import time

TUTORIAL_WORKERS = 4  # the tutorial's DataLoaders: num_workers=4


def to_device(images, targets, device):
    """A batch on ``device`` as the reference's ``train_one_epoch`` moves it: every image, and every
    tensor of the targets, copied without blocking."""
    import torch

    images = [image.to(device, non_blocking=True) for image in images]
    targets = [{k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in t.items()}
               for t in targets]
    return images, targets


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
        self.amp = config in ("ours_amp", "ours_bf16")
        self.bf16 = config == "ours_bf16"  # bfloat16 autocast on any device, no GradScaler
        # ours_nchw / ours_nhwc: ours with the memory format forced, to compare both in one run
        self.channels_last = dict(ours_nchw="off", ours_nhwc="on").get(config, spec["channels_last"])
        self.device = torch.device(spec["device"])
        self.pool_train, self.pool_test = spec["train_indices"], spec["test_indices"]
        self._peak = None
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

        dtype = torch.bfloat16 if self.bf16 else engine.autocast_dtype(self.device.type)
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.amp)

    def build_model(self, min_size, max_size):
        import torch

        import tv_training
        from finetune.models import pretrained, specs

        model = pretrained.build_detector(tv_training.get_model_instance_segmentation, "maskrcnn", 2, "layout",
                                             min_size=min_size, max_size=max_size,
                                             **self.spec["model_kwargs"])  # stock torchvision modules
        model.load_state_dict(torch.load(self.spec["init_weights"], map_location="cpu", weights_only=True))
        if self.reference:
            return model.to(self.device)
        from finetune.speedups import mask_paste

        model = specs.prepare_for_device(model, self.device, self.channels_last)
        return mask_paste.compact_masks(model)  # evaluation as tv_training.main does it: masks as RLE

    def datasets(self, train_indices, test_indices):
        import torch

        import tv_training

        root = self.spec["data_path"]
        # no random flip in either configuration (see the module docstring)
        train = tv_training.PennFudanDataset(root, tv_training.get_transform(train=False))
        test = tv_training.PennFudanDataset(root, tv_training.get_transform(train=False))
        return torch.utils.data.Subset(train, train_indices), torch.utils.data.Subset(test, test_indices)

    def loaders(self, train_ds, test_ds):
        """The tutorial's two DataLoaders (reference) or finetune.data.loaders.make_loaders (ours)."""
        import torch

        import utils
        from finetune.data.loaders import make_loaders

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
        from finetune.speedups import inference

        if self.reference:
            return reference_evaluate(model, loader, self.device)
        with inference.inference_speedups(model, self.device, channels_last=self.channels_last):  # as tv_training.train
            return engine.evaluate(model, loader, self.device, coco_gt=coco_gt)  # fp32, also for ours_amp (as --amp)

    def _train_step(self, images, targets):
        """One iteration of train_one_epoch: forward, loss.item(), backward, optimizer step."""
        images, targets = to_device(images, targets, self.device)
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
        """Best-of-N throughput of a big sgemm and a big 3x3 convolution (both formats), in FLOP/s;
        measured once per process (``--reuse-workers`` asks again in later phases)."""
        if self._peak is None:
            self._peak = self._measure_peak(repeats)
        return self._peak

    def _measure_peak(self, repeats):
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

        from finetune.run import optim

        torch.manual_seed(self.spec["seed"])
        self.model = self.build_model(self.spec["min_size"], self.spec["max_size"])
        self.model.train()
        self.optimizer = self._optimizer(self.model, self.spec["step_lr"])
        self.scaler = optim.make_grad_scaler(self.device, self.amp, torch.bfloat16 if self.bf16 else None)
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

        import utils

        base = self.train_loader.dataset.dataset  # the PennFudanDataset under the Subset
        counts = []
        for image_ids in self.kept:
            images, targets = utils.collate_fn([base[i] for i in image_ids])
            images, targets = to_device(images, targets, self.device)
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

        import tv_training
        import utils
        from finetune.models import small_maskrcnn, specs
        from finetune.run import demo, optim

        kwargs, anchors = small_maskrcnn.model_settings("maskrcnn_resnet18")
        recipe = demo.DEMO_RECIPE
        spec = specs.model_spec("maskrcnn_resnet18", 2, "none",
                                dict(min_size=recipe["min_size"], max_size=recipe["max_size"], **kwargs), anchors)
        torch.manual_seed(self.spec["seed"])
        model = specs.build_model(tv_training.MODELS, spec, None)
        self.model = model.to(self.device) if self.reference else \
            specs.prepare_for_device(model, self.device, self.channels_last)
        self.model.train()
        if self.reference:  # torchvision's train.py: one AdamW call per parameter per operation
            params = [p for p in self.model.parameters() if p.requires_grad]
            self.optimizer = torch.optim.AdamW(params, lr=recipe["lr"], weight_decay=recipe["weight_decay"])
        else:
            self.optimizer = optim.make_optimizer(self.model, "adamw", recipe["lr"], 0.0, recipe["weight_decay"])
        dataset = tv_training.PennFudanDataset(self.spec["demo_data_path"], tv_training.get_transform(train=False))
        self.demo_batches = [utils.collate_fn([dataset[i], dataset[i + 1]]) for i in range(0, len(dataset) - 1, 2)]
        self.demo_next = 0
        for _ in range(self.spec["warmup"]):
            self.cmd_demo()
        return self.cmd_info()

    def _demo_step(self):
        import torch

        from finetune.run import demo

        images, targets = self.demo_batches[self.demo_next % len(self.demo_batches)]
        self.demo_next += 1
        images, targets = to_device(images, targets, self.device)
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
        if self.spec["warmup"]:
            with torch.inference_mode():  # warm-up: one image
                self.model([test_ds[0][0].to(self.device)])
        self._sync()
        return dict(self.cmd_info(), gt_once_seconds=gt_seconds)

    def cmd_eval(self, capture=False):
        """One evaluation pass; with ``capture``, also the detections (their encoding is not timed)."""
        from finetune.outputs import metrics

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
        result = dict(seconds=seconds, coco=metrics.coco_summary(evaluator))
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
        if self.spec["warmup"]:  # weights untouched: one forward/backward on a training batch, one inference
            import utils

            images, targets = utils.collate_fn([self.epoch_train[i] for i in range(self.spec["batch_size"])])
            optimizer = self._optimizer(self.model, 0.0)
            self.model.train()
            images, targets = to_device(images, targets, self.device)
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
        from coco_utils import get_coco_api_from_dataset
        from finetune.outputs import metrics
        from finetune.run import optim

        self.model.load_state_dict(self.initial_state)
        torch.manual_seed(self.spec["seed"])
        optimizer = self._optimizer(self.model, self.spec["lr"])
        lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.1)
        scaler = optim.make_grad_scaler(self.device, self.amp)
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
                    losses=[r["loss"] for r in history], coco=metrics.coco_summary(evaluator))

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
