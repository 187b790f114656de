"""TorchVision Object Detection Finetuning Tutorial, as one runnable script.

Fine-tunes a COCO-pretrained Mask R-CNN on the Penn-Fudan pedestrians (170 images) and
scores it with COCO bbox/segm mAP, using the reference helpers in this folder
(engine.py, utils.py, coco_utils.py, coco_eval.py, transforms.py).

    python tv_training.py                            # the tutorial (downloads data + weights)
    python tv_training.py --demo                     # offline: synthetic pedestrians, random init
    python tv_training.py --check-forward            # the tutorial's "testing forward()" check
    python tv_training.py --model fasterrcnn         # tutorial section 1: box-only fine-tuning
    python tv_training.py --resume output/checkpoint.pth              # continue training
    python tv_training.py --test-only --weights output/checkpoint.pth # evaluate only
    python tv_training.py --predict img.png --weights output/checkpoint.pth
    torchrun --nproc_per_node=2 tv_training.py       # several processes (gloo on CPU, NCCL on GPU)

The sections follow the tutorial; what it does not have lives in modules named for it:
pennfudan_data.py (Penn-Fudan files: checks, download), coco_data.py (COCO files),
dataset_formats.py (the reader a --data-path needs; loaders), model_weights.py (offline weights,
checkpoints' models), speedups.py, demo.py, outputs.py (metrics, figures, --predict),
training_run.py (optimizer, checkpoints, resume), report.py (output/report/: where the model fails),
run_settings.py (the flags, the demo's recipe and a checkpoint's, settled once before main's work).
"""

import argparse
import functools
import os
import signal
import sys
import time

if __name__ == "__main__":  # run as a script: Ctrl-C while torch loads (seconds) ends in one line, not a traceback
    signal.signal(signal.SIGINT, lambda *_: (os.write(2, b"\ninterrupted while starting: nothing was done\n"),
                                             os._exit(130)))

import torch
import torchvision
from PIL import Image
from torch.nn.parallel import DistributedDataParallel
from torchvision import tv_tensors
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.detection.rpn import AnchorGenerator
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

import utils
from engine import NonFiniteLossError, evaluate, train_one_epoch
from finetune import hardware
from finetune.data import loaders
from finetune.data.formats import load_datasets, prepare_data
from finetune.data.image_files import read_rgb
from finetune.data.loaders import make_loaders
from finetune.data.pennfudan import instance_masks_and_boxes, pair_images_and_masks, read_instance_mask
from finetune.errors import TrainingInterrupted, TutorialError
from finetune.models import pretrained, small_maskrcnn, specs
from finetune.outputs import metrics, onnx_export, onnx_runtime, plots, prediction, report
from finetune.run import checkpoints, demo, flags, interrupts, optim, run_folder, settings
from finetune.speedups import inference, mask_paste

# ---------------------------------------------------------------------------------------
# Defining the Dataset: PNGImages/X.png with PedMasks/X_mask.png (pixel value k = k-th pedestrian)
# ---------------------------------------------------------------------------------------

class PennFudanDataset(torch.utils.data.Dataset):
    """The tutorial's dataset: returns ``(image, target)`` with tv_tensors for the v2 transforms.

    Images and masks are paired by name, not by sorted position, and decoded with PIL
    (pennfudan_data.py, which this class needs beside it).
    """

    def __init__(self, root, transforms):
        self.root = root
        self.transforms = transforms
        self.pairs = pair_images_and_masks(root)
        self.imgs = [os.path.basename(p) for p, _ in self.pairs]
        self.masks = [os.path.basename(m) for _, m in self.pairs]
        self._sizes = {}

    def __getitem__(self, idx):
        img_path, mask_path = self.pairs[idx]
        img = read_rgb(img_path)
        mask = read_instance_mask(mask_path, img.shape[-2:])
        # one binary mask and one box per instance id
        masks, boxes, _ = instance_masks_and_boxes(mask)
        num_objs = len(masks)

        # Penn-Fudan has a single category (pedestrian = label 1; 0 is the background)
        labels = torch.ones((num_objs,), dtype=torch.int64)
        area = (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 2] - boxes[:, 0])
        # no crowd regions in this dataset: COCO evaluation counts every instance
        iscrowd = torch.zeros((num_objs,), dtype=torch.int64)

        img = tv_tensors.Image(img)
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=F.get_size(img)),
            "masks": tv_tensors.Mask(masks),
            "labels": labels,
            "image_id": idx,
            "area": area,
            "iscrowd": iscrowd,
        }
        if self.transforms is not None:
            img, target = self.transforms(img, target)
        return img, target

    def get_height_and_width(self, idx):
        """Image size from the PNG header, without decoding (used to group batches by aspect ratio)."""
        if idx not in self._sizes:
            with Image.open(self.pairs[idx][0]) as im:
                self._sizes[idx] = (im.height, im.width)
        return self._sizes[idx]

    def __len__(self):
        return len(self.pairs)


# ---------------------------------------------------------------------------------------
# The models: section 1 (Faster R-CNN), section 2 (MobileNetV2 backbone), Mask R-CNN.
# Each takes ``weights`` ("DEFAULT": pretrained, downloaded; None: random) and returns the
# stock torchvision model; specs.build_model adds offline errors and checkpoints.
# ---------------------------------------------------------------------------------------

def get_model_object_detection(num_classes, weights="DEFAULT", **kwargs):
    """Section 1: fine-tune a COCO Faster R-CNN, replacing only the box predictor."""
    # COCO-trained detector (weights=None: random init)
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=weights, **kwargs)
    # a fresh box predictor sized for this dataset's classes, on the same 1024 features
    in_features = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes)
    return model


def get_model_mobilenet(num_classes, weights="DEFAULT", **kwargs):
    """Section 2: Faster R-CNN on an ImageNet MobileNetV2 backbone (one feature map)."""

    # the ImageNet classifier's convolutional part only (no pooling, no classifier)
    backbone = torchvision.models.mobilenet_v2(weights=weights).features
    # FasterRCNN reads the feature depth from this attribute (MobileNetV2 ends with 1280 channels)
    backbone.out_channels = 1280
    # 5 sizes x 3 aspect ratios per location, on the single feature map
    anchor_generator = AnchorGenerator(sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),))
    roi_pooler = torchvision.ops.MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2)
    return FasterRCNN(backbone, num_classes=num_classes, rpn_anchor_generator=anchor_generator,
                      box_roi_pool=roi_pooler, **kwargs)


def get_model_instance_segmentation(num_classes, weights="DEFAULT", **kwargs):
    """The tutorial's model: COCO Mask R-CNN with new box and mask predictors for ``num_classes``.

    ``kwargs`` go to ``maskrcnn_resnet50_fpn`` (e.g. ``min_size``, ``weights_backbone``).
    """
    # COCO-trained Mask R-CNN (weights=None: random init)
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=weights, **kwargs)
    # new box predictor for num_classes, fed by the box head's features
    in_features = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes)
    # the same for the mask predictor
    in_features_mask = model.roi_heads.mask_predictor.conv5_mask.in_channels
    hidden_layer = 256
    model.roi_heads.mask_predictor = MaskRCNNPredictor(in_features_mask, hidden_layer, num_classes)
    return model


MODELS = {
    "maskrcnn": get_model_instance_segmentation,
    "fasterrcnn": get_model_object_detection,
    "mobilenet": get_model_mobilenet,
    "maskrcnn_resnet18": small_maskrcnn.get_model_maskrcnn_resnet18,  # not in the tutorial: the demo's
}


# ---------------------------------------------------------------------------------------
# Transforms (torchvision.transforms.v2 understands tv_tensors)
# ---------------------------------------------------------------------------------------

def get_transform(train):
    transforms = []
    if train:
        transforms.append(T.RandomHorizontalFlip(0.5))
    transforms.append(T.ToDtype(torch.float, scale=True))
    transforms.append(T.ToPureTensor())
    return T.Compose(transforms)


# ---------------------------------------------------------------------------------------
# Testing forward() before iterating over the dataset
# ---------------------------------------------------------------------------------------

def check_forward(model, data_loader, device):
    """Losses on one training batch, then inference on two random images."""
    images, targets = next(iter(data_loader))
    images = [image.to(device) for image in images]
    targets = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in t.items()} for t in targets]
    model.train()
    output = model(images, targets)  # returns losses and detections
    print(output)
    model.eval()
    with torch.inference_mode():
        x = [torch.rand(3, 300, 400, device=device), torch.rand(3, 500, 400, device=device)]
        predictions = model(x)  # returns predictions
    print(predictions[0])
    return output, predictions


# ---------------------------------------------------------------------------------------
# Putting everything together
# ---------------------------------------------------------------------------------------

def build_model(model_name, weights, classes, device, checkpoint=None, min_size=800, max_size=1333,
                demo_settings=False, channels_last="auto"):
    """The model to train or evaluate, on ``device``, with this project's speed-ups (all models).

    From a ``checkpoint`` it is rebuilt as the checkpoint describes (its classes too); otherwise
    ``model_name`` (a key of ``MODELS``) with ``weights`` ("DEFAULT", "none") for ``classes`` (and
    the demo's model settings with ``demo_settings``). Returns ``(model, model_spec)``.
    """
    kwargs, anchors = small_maskrcnn.model_settings(model_name) if demo_settings else ({}, None)
    if model_name == "maskrcnn_resnet18":  # one network, with or without the demo's other settings
        kwargs = dict(small_maskrcnn.DEMO_SMALL_MODEL, **kwargs)
    kwargs = dict(min_size=min_size, max_size=max_size, **kwargs)
    if checkpoint is not None:  # a plain state dict is taken as model_name with these settings
        spec, state = specs.checkpoint_spec(checkpoint, model_name, kwargs, anchors, classes), \
            checkpoint["model"]
    else:
        # the background plus one class per category
        spec = specs.model_spec(model_name, len(classes) + 1, weights, kwargs, anchors, classes)
        state = None if str(weights).lower() == "none" else weights
    model = specs.build_model(MODELS, spec, state)
    return specs.prepare_for_device(model, device, channels_last), spec


def predict(weights, checkpoint, paths, output_dir="", score_threshold=0.5, overwrite=False, device_name="auto",
            eval_bf16=False, typed_model=None, model_name="maskrcnn", **model_kwargs):
    """``--predict``: the trained model of ``weights`` on the images in ``paths`` (files or
    folders), a PNG and a JSON each plus results.json in ``output_dir/predict``
    (prediction.predict). A checkpoint (``checkpoint``, its contents) runs in PyTorch on
    ``device_name``; an .onnx file in ONNX Runtime (onnx_export.py). ``model_name`` and
    ``model_kwargs`` (build_model's) describe a plain state dict. Under torchrun, rank 0 alone
    predicts and writes the files."""
    if onnx_runtime.is_onnx_model(weights):
        return onnx_runtime.predict_command(weights, paths, output_dir, score_threshold, overwrite, typed_model,
                                           device_name, eval_bf16)
    if not utils.is_main_process():
        return {"predictions": []}
    device = hardware.pick_device(device_name)
    model, spec = build_model(model_name, weights, None, device, checkpoint, **model_kwargs)
    with inference.inference_speedups(model, device, eval_bf16, model_kwargs.get("channels_last", "auto")):
        return prediction.predict(model, paths, device, os.path.join(output_dir or ".", "predict"), score_threshold,
                               spec["classes"], overwrite=overwrite)


def evaluate_only(model, data_loader_test, coco_gt, device, classes, output_dir="", eval_bf16=False, report_info=None,
                  score_threshold=0.5, channels_last="auto"):
    """``--test-only``: the COCO tables and the per-class AP of ``model`` on the test set; the
    report (report.py, from ``report_info``: report.run_info's arguments) in ``output_dir``.
    ``eval_bf16`` and ``channels_last``: inference.inference_speedups'."""
    if coco_gt is None:
        raise TutorialError("--test-only with --test-size 0: there is no test image to evaluate.")
    model_without_ddp = model.module if isinstance(model, DistributedDataParallel) else model
    with inference.inference_speedups(model_without_ddp, device, eval_bf16, channels_last):
        coco_evaluator = evaluate(model, data_loader_test, device=device, coco_gt=coco_gt)
    summary = metrics.evaluation_summary(coco_evaluator, classes)
    if output_dir and report_info is not None:  # from the detections just made: the model is not run again
        report.write_report(output_dir, coco_evaluator, data_loader_test.dataset, classes, report.run_info(**report_info),
                            summary, score_threshold, records=report_info.get("records"))
    return summary


def train(model, optimizer, lr_scheduler, data_loader, data_loader_test, device, epochs, coco_gt=None, classes=None,
          start_epoch=0, records=None, scaler=None, print_freq=10, clip_grad_norm=None, seed=0, train_sampler=None,
          shuffle_gen=None, eval_bf16=False, output_dir="", run_args=None, spec=None, best_metric="auto",
          score_threshold=0.5, preview=None, report_info=None, replace_earlier_run=False, resumed_from=None,
          channels_last="auto"):
    """The tutorial's loop: ``epochs`` of ``train_one_epoch``, the lr step, COCO evaluation
    (``coco_gt``: the test set's ground truth; None: none) and, in ``output_dir``, the
    checkpoint (with ``run_args``, the settings a resume takes), best.pth, metrics and figures
    after each epoch, then the final figures and the report. ``records``: the epochs so far (a
    resumed run's); ``preview``: (data root, dataset or None) for preview.png; ``report_info``:
    report.run_info's arguments but the records; ``replace_earlier_run`` (--overwrite): an
    earlier run's files in ``output_dir`` are removed first, unless it is the run continued from
    ``resumed_from``; ``eval_bf16`` and ``channels_last``: the evaluations' inference.inference_speedups.
    Ctrl-C stops after the current iteration and raises
    ``TrainingInterrupted``; returns the last epoch's metrics and ``records``."""
    records = list(records or [])
    if start_epoch >= epochs:  # a finished run, resumed: nothing to train
        return dict(records[-1] if records else {}, records=records)
    if replace_earlier_run and output_dir:  # only now: a typo in the data path must not cost the earlier run
        run_folder.clear_earlier_run(output_dir, resumed_from)
    model_without_ddp = model.module if isinstance(model, DistributedDataParallel) else model
    # --eval-bf16, and the memory format that evaluates fastest on this CPU
    fast_evaluation = functools.partial(inference.inference_speedups, model_without_ddp, device, eval_bf16,
                                        channels_last)
    ckpt_path = os.path.join(output_dir, "checkpoint.pth") if output_dir else None
    trained = False
    try:  # Ctrl-C stops after the current iteration; the last complete checkpoint stays
        with interrupts.StopAtSafePoint(output_dir) as stop:
            if output_dir and preview is not None:  # inside: a Ctrl-C while it is drawn stops before the first step
                plots.save_preview(preview[0], os.path.join(output_dir, "preview.png"), preview[1])
            print("Start training")
            start_time = time.time()
            data_loader, data_loader_test = stop.wrap(data_loader), stop.wrap(data_loader_test)
            coco_evaluator = None
            for epoch in range(start_epoch, epochs):
                # Each epoch's randomness (shuffling, flips) depends on (seed, epoch) alone, so a
                # resumed run repeats the uninterrupted one exactly. Under torchrun each rank
                # draws its own flips (rank 0 keeps the single-process stream).
                torch.manual_seed(seed + epoch + 1_000_003 * utils.get_rank())
                if shuffle_gen is not None:
                    shuffle_gen.manual_seed(seed + epoch)
                if isinstance(train_sampler, torch.utils.data.DistributedSampler):  # under torchrun
                    train_sampler.set_epoch(epoch)
                epoch_start, iteration_losses = time.time(), []
                # one pass over the training data; a log line every print_freq iterations
                metric_logger = train_one_epoch(model, optimizer, data_loader, device, epoch, print_freq=print_freq,
                                                scaler=scaler, loss_history=iteration_losses,
                                                clip_grad_norm=clip_grad_norm)
                lr = optimizer.param_groups[0]["lr"]
                # the schedule advances once per epoch
                lr_scheduler.step()
                train_time = time.time() - epoch_start
                # COCO bbox/segm scores on the held-out images
                with fast_evaluation():
                    coco_evaluator = evaluate(model, data_loader_test, device=device, coco_gt=coco_gt) \
                        if coco_gt is not None else None
                records.append(metrics.epoch_record(epoch, lr, train_time, time.time() - epoch_start, metric_logger,
                                                    iteration_losses, coco_evaluator, classes))
                if output_dir:
                    checkpoints.save_checkpoint(ckpt_path, model_without_ddp, optimizer, lr_scheduler, scaler,
                                                 epoch, run_args, records, spec)
                    checkpoints.save_if_best(os.path.join(output_dir, "best.pth"), records, best_metric,
                                              model_without_ddp, spec, run_args)
                    metrics.save_epoch_outputs(output_dir, records)
                stop.check()
            print(f"Training time {time.strftime('%H:%M:%S', time.gmtime(time.time() - start_time))}")
            print("That's it!")
            trained = stop.trained = True
            if output_dir:
                dataset_test = data_loader_test.dataset
                with fast_evaluation():
                    plots.save_final_figures(model_without_ddp, dataset_test, device, output_dir, score_threshold,
                                               classes)
                if coco_evaluator is not None and report_info is not None:
                    report.write_report(output_dir, coco_evaluator, dataset_test, classes,
                                        report.run_info(**report_info, records=records), records[-1], score_threshold,
                                        records=records, curves_png=os.path.join(output_dir, "curves.png"))
            stop.check()
    except KeyboardInterrupt:
        raise interrupts.interrupted(records, ckpt_path, finished=trained) from None
    except NonFiniteLossError as e:
        kept = f"; the last good checkpoint is {ckpt_path}" if ckpt_path and os.path.exists(ckpt_path) else ""
        raise TutorialError(f"{e}{kept}") from None
    except OSError as e:  # the output folder filled up or became unwritable mid-run
        kept = f"; the last complete epoch is in {ckpt_path} (--resume {ckpt_path} once it is fixed)" \
            if ckpt_path and os.path.exists(ckpt_path) else ""
        raise TutorialError(f"{e.filename or output_dir}: cannot be written ({e.strerror or e}){kept}") from None
    return dict(records[-1] if records else {}, records=records)


def main(args):
    """Run the tutorial; returns a dict with the final metrics (``bbox``/``segm``: 12 named COCO numbers)."""
    # the settings, once: the flags, then --demo's recipe, then a checkpoint's (run_settings.py)
    args, checkpoint = settings.settle(args, get_args_parser(add_help=False), pretrained.load_weights_file)
    model_kwargs = dict(min_size=args.min_size, max_size=args.max_size, demo_settings=args.demo,
                        channels_last=args.channels_last)
    typed_model = args.model if "model" in getattr(args, "explicit", ()) else None
    if args.export:  # the checkpoint as ONNX, checked against PyTorch (onnx_export.py)
        return onnx_export.export_command(args.weights, args.export, build_model, PennFudanDataset, get_transform,
                                          args.predict, args.score_threshold, args.overwrite, typed_model, args.model,
                                          **model_kwargs)
    if args.predict:  # a trained model (checkpoint or .onnx) on your images: a PNG and a JSON each
        return predict(args.weights, checkpoint, args.predict, args.output_dir, args.score_threshold, args.overwrite,
                       args.device, args.eval_bf16, typed_model, args.model, **model_kwargs)
    device = hardware.pick_device(args.device, args.gpu)  # --device auto: CUDA when present, else the CPU
    torch.manual_seed(args.seed)

    # the data: Penn-Fudan (downloaded), the demo's (generated) or your own, with get_transform
    prepare_data(args.data_path, demo.make_demo_data if args.demo else None)
    data = load_datasets(args.data_path, PennFudanDataset, get_transform, args.test_size, args.train_size, args.seed,
                         args.test_data_path, args.image_dir, check=utils.is_main_process(), class_names=args.classes)
    dataset, dataset_test, classes = data["train"], data["test"], data["classes"]
    args = settings.settle_for_data(args, data, checkpoint)  # box-only data: Faster R-CNN
    data_loader, data_loader_test, train_sampler, shuffle_gen = make_loaders(
        dataset, dataset_test, args.batch_size, loaders.loader_workers(args.workers), args.distributed, args.seed,
        args.aspect_ratio_group_factor, pin_memory=device.type == "cuda")

    # the model from its builder above, moved to the device (wrapped in DDP under torchrun)
    model_without_ddp, spec = build_model(args.model, args.weights, classes, device, checkpoint, **model_kwargs)
    model = DistributedDataParallel(model_without_ddp, [args.gpu] if args.gpu is not None else None) \
        if args.distributed else model_without_ddp
    if args.check_forward:
        return {"losses": {k: v.item() for k, v in check_forward(model_without_ddp, data_loader, device)[0].items()}}
    mask_paste.compact_masks(model_without_ddp)  # evaluation: masks as RLE, memory bounded on big images
    report_info = settings.report_info(args, checkpoint, classes, spec["model"], device, len(dataset_test))
    if args.test_only:
        return evaluate_only(model, data_loader_test, data["coco_gt"], device, classes, args.output_dir, args.eval_bf16,
                             report_info, args.score_threshold, args.channels_last)

    # SGD and StepLR as in the tutorial (--opt / --lr-scheduler offer alternatives); --resume restores them
    optimizer = optim.make_optimizer(model_without_ddp, args.opt, args.lr, args.momentum, args.weight_decay)
    lr_scheduler = optim.make_lr_scheduler(optimizer, args.lr_scheduler, args.epochs, args.lr_step_size,
                                                  args.lr_gamma)
    scaler = optim.make_grad_scaler(device, args.amp)
    start_epoch, records = checkpoints.resume(checkpoint, args.resume, args.epochs, optimizer, lr_scheduler, scaler)
    return train(model, optimizer, lr_scheduler, data_loader, data_loader_test, device, args.epochs, data["coco_gt"],
                 classes, start_epoch, records, scaler, args.print_freq, args.clip_grad_norm, args.seed, train_sampler,
                 shuffle_gen, args.eval_bf16, args.output_dir, dict(vars(args)), spec, args.best_metric,
                 args.score_threshold, (args.data_path, data["preview"]), report_info,
                 replace_earlier_run=args.overwrite, resumed_from=args.resume, channels_last=args.channels_last)


def get_args_parser(add_help=True):
    """torchvision train.py's flag names, the tutorial's values as defaults."""
    p = settings.ExplicitArgumentParser(description="TorchVision Object Detection Finetuning Tutorial",
                                    add_help=add_help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-path", default="data/PennFudanPed", type=flags.path_text,
                   help="dataset root with PNGImages/ and PedMasks/ (downloaded when missing); or your own data: a "
                        "COCO instances file (.json), a folder of labelme JSONs, a YOLO data.yaml")
    p.add_argument("--test-data-path", default=None, type=flags.path_text,
                   help="a COCO file (or labelme folder) to test on (same categories); None: hold out --test-size "
                        "images of --data-path (a YOLO data.yaml tests on its val split)")
    p.add_argument("--image-dir", default=None, type=flags.path_text,
                   help="where a COCO file's images are; None: looked for beside the file (docs/own-data.md)")
    p.add_argument("--classes", default=None, type=flags.class_list, metavar="A,B,C",
                   help="a labelme folder's classes in this order, other labels left out; None: every label, sorted "
                        "(docs/own-data.md)")
    p.add_argument("--model", default="maskrcnn", choices=sorted(MODELS),
                   help="maskrcnn (the tutorial), fasterrcnn (section 1), mobilenet (section 2), "
                        "maskrcnn_resnet18 (small Mask R-CNN for training from scratch; --demo's)")
    p.add_argument("--weights", default="DEFAULT", type=flags.path_text,
                   help="DEFAULT (pretrained, downloaded: COCO; an ImageNet backbone for mobilenet and "
                        "maskrcnn_resnet18), none (random init) or a checkpoint file")
    p.add_argument("--device", default="auto", type=flags.device_name,
                   help="cuda, cuda:N, cpu or auto (cuda when available, else cpu)")
    p.add_argument("-b", "--batch-size", default=2, type=flags.positive_int, help="images per batch (per process)")
    p.add_argument("--epochs", default=2, type=flags.non_negative_int,
                   help="number of epochs (0 only with --test-only or --predict)")
    p.add_argument("-j", "--workers", default=4, type=flags.non_negative_int,
                   help="data-loading workers (capped at the number of CPU cores)")
    p.add_argument("--opt", default="sgd", choices=["sgd", "adamw"], help="optimizer")
    p.add_argument("--lr", default=0.005, type=flags.positive_float, help="learning rate")
    p.add_argument("--momentum", default=0.9, type=flags.non_negative_float, help="SGD momentum")
    p.add_argument("--wd", "--weight-decay", default=0.0005, type=flags.non_negative_float, dest="weight_decay",
                   help="weight decay")
    p.add_argument("--lr-scheduler", default="steplr", choices=["steplr", "cosineannealinglr"],
                   help="steplr (the tutorial) or cosineannealinglr (over --epochs)")
    p.add_argument("--clip-grad-norm", default=None, type=flags.positive_float,
                   help="clip the gradients' total norm to this value (None: no clipping, as in the tutorial)")
    p.add_argument("--lr-step-size", default=3, type=flags.positive_int, help="StepLR: epochs between lr drops")
    p.add_argument("--lr-gamma", default=0.1, type=flags.positive_float, help="StepLR: lr multiplier at each drop")
    p.add_argument("--print-freq", default=10, type=flags.positive_int, help="print a log line every N iterations")
    p.add_argument("--output-dir", default="output",
                   help="checkpoint, metrics.json, curves.png and figures go here ('' to write nothing; --predict then "
                        "writes to ./predict)")
    p.add_argument("--resume", default=None, type=flags.path_text,
                   help="checkpoint to continue training from; None starts afresh")
    p.add_argument("--best-metric", default="auto", choices=["auto", "bbox", "bbox50", "segm", "segm50"],
                   help="what best.pth keeps the best epoch of: COCO AP (bbox, segm) or AP50; auto: segm for "
                        "mask models, bbox otherwise")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run (or --predict's results) already in --output-dir, or --export's FILE.onnx (without "
                        "it, such a run or file stops this one)")
    p.add_argument("--test-only", action="store_true",
                   help="only evaluate (with --resume or --weights FILE), print the COCO tables and write "
                        "--output-dir/report/ (an earlier report moves to report/earlier/)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                   help="mixed precision for training: float16 + GradScaler on CUDA, bfloat16 on CPU (no loss "
                        "scaling needed; slow without bf16 hardware); --demo turns it on for a CPU with bf16 "
                        "instructions")
    p.add_argument("--eval-bf16", action="store_true",
                   help="evaluation, --test-only and --predict on the CPU with the backbone in bfloat16 (heads in "
                        "float32): faster on CPUs with bf16 instructions, COCO numbers within 0.005 of float32 on "
                        "the checkpoints measured (docs/speed.md); training keeps --amp's setting")
    p.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"],
                   help="channels_last memory format (default auto: on CPUs with AVX-512 always, on AVX2 CPUs to "
                        "evaluate and predict only, NCHW on GPUs: what measured faster, docs/speed.md)")
    p.add_argument("--seed", default=0, type=flags.seed_value, help="seed for the split, initial weights and shuffling")
    p.add_argument("--test-size", default=50, type=flags.non_negative_int,
                   help="images held out for testing (the last 50 of the split); 0 trains on all, no evaluation")
    p.add_argument("--train-size", default=None, type=flags.positive_int,
                   help="training images; None means all the rest")
    p.add_argument("--min-size", default=800, type=flags.positive_int, help="model input: shorter side resized to this")
    p.add_argument("--max-size", default=1333, type=flags.positive_int, help="model input: longer side at most this")
    p.add_argument("--aspect-ratio-group-factor", default=-1, type=flags.group_factor,
                   help="group batches by aspect ratio, K: 2K+1 log-spaced bin edges (-1: off, as in the tutorial)")
    p.add_argument("--check-forward", action="store_true",
                   help="the tutorial's 'testing forward()' check: one training batch and inference, then exit")
    p.add_argument("--demo", action="store_true",
                   help="offline demo: synthetic data, random init and a from-scratch recipe (demo.DEMO_RECIPE)")
    p.add_argument("--predict", nargs="+", default=None, type=flags.path_text, metavar="PATH",
                   help="images or folders to run a trained model (--weights FILE) on; writes PNG + JSON")
    p.add_argument("--export", default=None, type=flags.path_text, metavar="FILE.onnx",
                   help="write the model of --weights CHECKPOINT as ONNX to FILE.onnx (FILE.json beside it: classes, "
                        "input and outputs), once ONNX Runtime matches PyTorch on up to 8 of the checkpoint's test "
                        "images (or --predict's); None: no export (docs/export.md)")
    p.add_argument("--score-threshold", default=0.5, type=flags.unit_interval,
                   help="--predict / figures / the report's confusion matrix and gallery: lowest score kept, "
                        "from 0 to 1")
    p.add_argument("--dist-url", default="env://", help="url used to set up distributed training")
    return p


def cli(argv=None):
    """Command-line entry: user errors print one line (no traceback) and exit non-zero.

    Returns what ``main`` returns. Under torchrun, a run that ends normally destroys its
    process group (after an error the process just exits: tearing down a group whose other
    ranks may still wait in a collective could block, and torchrun stops them anyway).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = get_args_parser()
    args = parser.parse_args(argv)
    flags.check_combinations(parser, args)
    try:
        result = main(args)
    except TrainingInterrupted as e:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run is over: a late press must not cut the message
        hint = f"; resume with: {interrupts.resume_command(argv, e.checkpoint)}" if e.checkpoint else \
            f"; to write the report again: {interrupts.report_command(argv, e.finished)}" if e.finished else ""
        print(f"\n{e}{hint}", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:  # outside training: --predict, --test-only, or before training started
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if args.export:
            message = f"interrupted: {args.export} was not written (an earlier file there is as it was)"
        elif args.predict:
            where = os.path.join(args.output_dir or ".", "predict")
            message = (f"interrupted: the images done so far have their .png and .json in {where} (each file whole); "
                       "results.json, for all the images, was not written")
        elif args.test_only:
            message = "interrupted during evaluation: nothing was written"
        else:
            message = ("interrupted before training started: no checkpoint written, and a dataset being generated "
                       "or extracted was discarded")
        print(f"\n{message}", file=sys.stderr)
        sys.exit(130)
    except (MemoryError, RuntimeError) as e:
        if not isinstance(e, MemoryError) and not hardware.is_out_of_memory(e):
            raise
        print(f"error: out of memory ({str(e).splitlines()[0][:160]}). Lower --batch-size, or --min-size/--max-size "
              f"(the model's input size); checkpoints already written are whole.", file=sys.stderr)
        sys.exit(1)
    except TutorialError as e:
        if utils.is_dist_avail_and_initialized() and not utils.is_main_process():
            # under torchrun the other ranks' prints are silenced: an error must still show
            print(f"[rank {utils.get_rank()}] error: {e}", file=sys.stderr, force=True)
        else:
            print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    utils.cleanup_distributed()
    if result.get("failed"):  # --predict wrote the other images' results
        print(f"error: {len(result['failed'])} of {len(result['failed']) + len(result['predictions'])} image(s) "
              f"could not be read or predicted (listed above)", file=sys.stderr)
        sys.exit(1)
    return result


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # loaded: Ctrl-C is the run's own again
    cli()
