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
dataset_formats.py (checks, download, loaders), model_weights.py (offline weights,
checkpoints' models), speedups.py, demo.py, outputs.py (metrics, figures, --predict),
training_run.py (optimizer, checkpoints, resume), report.py (output/report/: where the model fails).
"""

import argparse
import functools
import os
import signal
import sys
import time

import torch
import torchvision
from PIL import Image
from torchvision import tv_tensors
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

import argument_checks as checks
import demo
import labelme_yolo
import model_weights
import onnx_export
import outputs
import report
import speedups
import training_run
import utils
from coco_utils import get_coco_api_from_dataset
from dataset_formats import (instance_masks_and_boxes, load_datasets, make_loaders, pair_images_and_masks,
                             prepare_data, read_instance_mask, read_rgb)
from engine import NonFiniteLossError, evaluate, train_one_epoch
from errors import DatasetError, TrainingInterrupted, TutorialError


# ---------------------------------------------------------------------------------------
# Defining the Dataset: PNGImages/X.png with PedMasks/X_mask.png (pixel value k = k-th pedestrian)
# ---------------------------------------------------------------------------------------

class PennFudanDataset(torch.utils.data.Dataset):
    """The tutorial's dataset: returns ``(image, target)`` with tv_tensors for the v2 transforms.

    Images and masks are paired by name, not by sorted position, and decoded with PIL
    (dataset_formats.py, which this class needs beside it).
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
# stock torchvision model; model_weights.build_model adds offline errors and checkpoints.
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
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.rpn import AnchorGenerator

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
    "maskrcnn_resnet18": demo.get_model_maskrcnn_resnet18,  # not in the tutorial: the demo's
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

def build_model(args, classes, device, checkpoint=None):
    """The model to train or evaluate, on ``device``, with this project's speed-ups (all models).

    From a checkpoint it is rebuilt as the checkpoint describes (its classes too); otherwise
    ``--model`` with ``--weights`` for ``classes`` (and the demo's settings under ``--demo``).
    Returns ``(model, model_spec)``.
    """
    kwargs, anchors = demo.model_settings(args.model) if args.demo else ({}, None)
    kwargs = dict(min_size=args.min_size, max_size=args.max_size, **kwargs)
    if checkpoint is not None:  # a plain state dict is taken as --model with these settings
        spec, weights = model_weights.checkpoint_spec(checkpoint, args.model, kwargs, anchors, classes), \
            checkpoint["model"]
    else:
        # the background plus one class per category
        spec = model_weights.model_spec(args.model, len(classes) + 1, args.weights, kwargs, anchors, classes)
        weights = None if str(args.weights).lower() == "none" else args.weights
    model = model_weights.build_model(MODELS, spec, weights)
    return model_weights.prepare_for_device(model, device, args.channels_last), spec


def write_report(args, output_dir, coco_evaluator, dataset_test, classes, summary, records, device, spec,
                 curves_png=None, trained_with=None):
    """``output_dir/report/`` from the last evaluation (report.py): where the model fails.
    ``trained_with``: a checkpoint's ``args`` (--test-only), whose recipe made the model."""
    recipe = {k: (trained_with or vars(args)).get(k) for k in checks.RECIPE if k not in ("model", "demo")}
    info = report.run_info(args.data_path, args.test_data_path, classes, spec["model"], recipe, device,
                           records, args.resume or (args.weights if args.test_only else None), len(dataset_test))
    return report.write_report(output_dir, coco_evaluator, dataset_test, classes, info, summary,
                               args.score_threshold, records=records, curves_png=curves_png)


def main(args):
    """Run the tutorial; returns a dict with the final metrics (``bbox``/``segm``: 12 named COCO numbers)."""
    utils.init_distributed_mode(args)
    if args.demo:
        demo.apply_demo_recipe(args, get_args_parser(add_help=False))
    if args.export:  # the checkpoint as ONNX, checked against PyTorch (onnx_export.py)
        return onnx_export.export_command(args, build_model, PennFudanDataset, get_transform)
    if args.predict and onnx_export.is_onnx_model(args.weights):  # --predict through ONNX Runtime
        return onnx_export.predict_command(args)
    # flags, device and output folder checked, weights loaded (--resume or --weights FILE)
    checkpoint = checks.check_run(args, model_weights.load_weights_file, utils.is_main_process())
    # --device auto: CUDA when present, otherwise the CPU
    device = training_run.pick_device(args.device, args.gpu)
    torch.manual_seed(args.seed)
    output_dir = args.output_dir if utils.is_main_process() else ""

    if args.predict:
        if not utils.is_main_process():
            return {"predictions": []}  # under torchrun, one process predicts and writes the files
        model, spec = build_model(args, None, device, checkpoint)
        with speedups.bfloat16_backbone(model, args.eval_bf16):  # no effect off the CPU
            return outputs.predict(model, args.predict, device, os.path.join(args.output_dir or ".", "predict"),
                                   args.score_threshold, spec["classes"], overwrite=args.overwrite)

    # the data: a Penn-Fudan folder or a COCO file (.json) with get_transform,
    # with a seeded hold-out of --test-size images, unless --test-data-path names a test file
    prepare_data(args.data_path, demo.make_demo_data if args.demo else None)
    data = load_datasets(args.data_path, PennFudanDataset, get_transform, args.test_size, args.train_size, args.seed,
                         args.test_data_path, args.image_dir, check=utils.is_main_process(), class_names=args.classes)
    dataset, dataset_test, classes = data["train"], data["test"], data["classes"]
    checks.check_model_for_data(args, data["has_masks"], classes, checkpoint)
    if len(dataset) < args.batch_size:
        raise DatasetError(f"{args.data_path}: {len(dataset)} training image(s) is fewer than one batch "
                           f"(-b {args.batch_size}); lower --batch-size or --test-size.")
    # the two loaders (workers beyond the cores only compete with the model)
    workers = min(args.workers, os.cpu_count() or 1)
    if workers < args.workers:
        print(f"Using {workers} data-loading workers (-j {args.workers} capped at the {os.cpu_count()} CPU cores)")
    data_loader, data_loader_test, train_sampler, shuffle_gen = make_loaders(
        dataset, dataset_test, args.batch_size, workers, args.distributed, args.seed,
        args.aspect_ratio_group_factor, pin_memory=device.type == "cuda")

    # the model from its builder above, moved to the device
    model, spec = build_model(args, classes, device, checkpoint)
    model_without_ddp = model
    if args.distributed:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[args.gpu] if args.gpu is not None else None)
        model_without_ddp = model.module

    # SGD and StepLR as in the tutorial (--opt / --lr-scheduler offer alternatives)
    optimizer = training_run.make_optimizer(model_without_ddp, args.opt, args.lr, args.momentum, args.weight_decay)
    lr_scheduler = training_run.make_lr_scheduler(optimizer, args.lr_scheduler, args.epochs, args.lr_step_size,
                                                  args.lr_gamma)
    scaler = training_run.make_grad_scaler(device, args.amp)
    start_epoch, records = 0, []
    if args.resume and not args.test_only:
        start_epoch, records = training_run.restore_training_state(checkpoint, optimizer, lr_scheduler, scaler)
        if start_epoch >= args.epochs:
            print(f"{args.resume}: finished at epoch {start_epoch - 1}; raise --epochs to continue")
            return dict(records[-1] if records else {}, records=records)
        print(f"Resumed from {args.resume}: continuing at epoch {start_epoch}")

    # the COCO ground truth of the test set is built once, not at every evaluation (none: --test-size 0)
    coco_gt = data["coco_gt"] or (get_coco_api_from_dataset(dataset_test) if len(dataset_test) else None)
    if args.check_forward:
        output, _ = check_forward(model_without_ddp, data_loader, device)
        return {"losses": {k: v.item() for k, v in output.items()}}
    speedups.compact_masks(model_without_ddp)  # evaluation: masks as RLE, memory bounded on big images
    bf16_evaluation = functools.partial(speedups.bfloat16_backbone, model_without_ddp, args.eval_bf16)  # --eval-bf16
    if args.test_only:
        if coco_gt is None:
            raise TutorialError("--test-only with --test-size 0: there is no test image to evaluate.")
        with bf16_evaluation():
            coco_evaluator = evaluate(model, data_loader_test, device=device, coco_gt=coco_gt)
        summary = outputs.evaluation_summary(coco_evaluator, classes)
        if output_dir:  # from the detections just made: the model is not run again
            saved = checkpoint if isinstance(checkpoint, dict) else {}
            write_report(args, output_dir, coco_evaluator, dataset_test, classes, summary, saved.get("records"),
                         device, spec, trained_with=saved.get("args") if isinstance(saved.get("args"), dict) else None)
        return summary

    if args.overwrite and output_dir:  # only now: a typo in the data path must not cost the earlier run
        checks.clear_earlier_run(output_dir, args.resume)
    ckpt_path = os.path.join(output_dir, "checkpoint.pth") if output_dir else None
    try:  # Ctrl-C stops after the current iteration; the last complete checkpoint stays
        with training_run.StopAtSafePoint(output_dir) as stop:
            if output_dir:  # inside: a Ctrl-C while it is drawn stops before the first step, figure whole
                outputs.save_preview(args.data_path, os.path.join(output_dir, "preview.png"),
                                     dataset if hasattr(dataset, "entries") else None)
            print("Start training")
            start_time = time.time()
            data_loader, data_loader_test = stop.wrap(data_loader), stop.wrap(data_loader_test)
            for epoch in range(start_epoch, args.epochs):
                # Each epoch's randomness (shuffling, flips) depends on (seed, epoch) alone, so a
                # resumed run repeats the uninterrupted one exactly. Under torchrun each rank
                # draws its own flips (rank 0 keeps the single-process stream).
                torch.manual_seed(args.seed + epoch + 1_000_003 * utils.get_rank())
                shuffle_gen.manual_seed(args.seed + epoch)
                if args.distributed:
                    train_sampler.set_epoch(epoch)
                epoch_start, iteration_losses = time.time(), []
                # one pass over the training data; a log line every --print-freq iterations
                metric_logger = train_one_epoch(model, optimizer, data_loader, device, epoch,
                                                print_freq=args.print_freq, scaler=scaler,
                                                loss_history=iteration_losses, clip_grad_norm=args.clip_grad_norm)
                lr = optimizer.param_groups[0]["lr"]
                # the schedule advances once per epoch
                lr_scheduler.step()
                train_time = time.time() - epoch_start
                # COCO bbox/segm scores on the held-out images
                with bf16_evaluation():
                    coco_evaluator = evaluate(model, data_loader_test, device=device, coco_gt=coco_gt) if coco_gt is not None else None
                records.append(outputs.epoch_record(epoch, lr, train_time, time.time() - epoch_start, metric_logger,
                                                    iteration_losses, coco_evaluator, classes))
                if output_dir:
                    training_run.save_checkpoint(ckpt_path, model_without_ddp, optimizer, lr_scheduler, scaler,
                                                 epoch, args, records, spec)
                    training_run.save_if_best(os.path.join(output_dir, "best.pth"), records, args.best_metric,
                                              model_without_ddp, spec, args)
                    outputs.save_epoch_outputs(output_dir, records)
                stop.check()
            print(f"Training time {time.strftime('%H:%M:%S', time.gmtime(time.time() - start_time))}")
            print("That's it!")
            if output_dir:
                with bf16_evaluation():
                    outputs.save_final_figures(model_without_ddp, dataset_test, device, output_dir,
                                               args.score_threshold, classes)
                if coco_evaluator is not None:
                    write_report(args, output_dir, coco_evaluator, dataset_test, classes, records[-1], records, device,
                                 spec, os.path.join(output_dir, "curves.png"))
            stop.check()
    except KeyboardInterrupt:
        raise training_run.interrupted(records, ckpt_path) from None
    except NonFiniteLossError as e:
        kept = f"; the last good checkpoint is {ckpt_path}" if ckpt_path and os.path.exists(ckpt_path) else ""
        raise TutorialError(f"{e}{kept}") from None
    return dict(records[-1] if records else {}, records=records)


def get_args_parser(add_help=True):
    """torchvision train.py's flag names, the tutorial's values as defaults."""
    p = demo.ExplicitArgumentParser(description="TorchVision Object Detection Finetuning Tutorial",
                                    add_help=add_help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-path", default="data/PennFudanPed",
                   help="dataset root with PNGImages/ and PedMasks/ (downloaded when missing); or your own data: a "
                        "COCO instances file (.json), a folder of labelme JSONs, a YOLO data.yaml")
    p.add_argument("--test-data-path", default=None,
                   help="a COCO file (or labelme folder) to test on (same categories); None: hold out --test-size "
                        "images of --data-path (a YOLO data.yaml tests on its val split)")
    p.add_argument("--image-dir", default=None,
                   help="where a COCO file's images are; None: looked for beside the file (docs/own-data.md)")
    p.add_argument("--classes", default=None, type=labelme_yolo.class_list, metavar="A,B,C",
                   help="a labelme folder's classes in this order, other labels left out; None: every label, sorted "
                        "(docs/own-data.md)")
    p.add_argument("--model", default="maskrcnn", choices=sorted(MODELS),
                   help="maskrcnn (the tutorial), fasterrcnn (section 1), mobilenet (section 2), "
                        "maskrcnn_resnet18 (small Mask R-CNN for training from scratch; --demo's)")
    p.add_argument("--weights", default="DEFAULT",
                   help="DEFAULT (pretrained, downloaded: COCO; an ImageNet backbone for mobilenet and "
                        "maskrcnn_resnet18), none (random init) or a checkpoint file")
    p.add_argument("--device", default="auto", type=checks.device_name,
                   help="cuda, cuda:N, cpu or auto (cuda when available, else cpu)")
    p.add_argument("-b", "--batch-size", default=2, type=checks.positive_int, help="images per batch (per process)")
    p.add_argument("--epochs", default=2, type=checks.non_negative_int,
                   help="number of epochs (0 only with --test-only or --predict)")
    p.add_argument("-j", "--workers", default=4, type=checks.non_negative_int,
                   help="data-loading workers (capped at the number of CPU cores)")
    p.add_argument("--opt", default="sgd", choices=["sgd", "adamw"], help="optimizer")
    p.add_argument("--lr", default=0.005, type=checks.positive_float, help="learning rate")
    p.add_argument("--momentum", default=0.9, type=checks.non_negative_float, help="SGD momentum")
    p.add_argument("--wd", "--weight-decay", default=0.0005, type=checks.non_negative_float, dest="weight_decay",
                   help="weight decay")
    p.add_argument("--lr-scheduler", default="steplr", choices=["steplr", "cosineannealinglr"],
                   help="steplr (the tutorial) or cosineannealinglr (over --epochs)")
    p.add_argument("--clip-grad-norm", default=None, type=checks.positive_float,
                   help="clip the gradients' total norm to this value (None: no clipping, as in the tutorial)")
    p.add_argument("--lr-step-size", default=3, type=checks.positive_int, help="StepLR: epochs between lr drops")
    p.add_argument("--lr-gamma", default=0.1, type=checks.positive_float, help="StepLR: lr multiplier at each drop")
    p.add_argument("--print-freq", default=10, type=checks.positive_int, help="print a log line every N iterations")
    p.add_argument("--output-dir", default="output",
                   help="checkpoint, metrics.json, curves.png and figures go here ('' to write nothing; --predict then "
                        "writes to ./predict)")
    p.add_argument("--resume", default=None, help="checkpoint to continue training from; None starts afresh")
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
                   help="channels_last memory format (auto: on for CPU, where it is faster)")
    p.add_argument("--seed", default=0, type=checks.seed_value, help="seed for the split, initial weights and shuffling")
    p.add_argument("--test-size", default=50, type=checks.non_negative_int,
                   help="images held out for testing (the last 50 of the split); 0 trains on all, no evaluation")
    p.add_argument("--train-size", default=None, type=checks.positive_int,
                   help="training images; None means all the rest")
    p.add_argument("--min-size", default=800, type=checks.positive_int, help="model input: shorter side resized to this")
    p.add_argument("--max-size", default=1333, type=checks.positive_int, help="model input: longer side at most this")
    p.add_argument("--aspect-ratio-group-factor", default=-1, type=checks.group_factor,
                   help="group batches by aspect ratio, K: 2K+1 log-spaced bin edges (-1: off, as in the tutorial)")
    p.add_argument("--check-forward", action="store_true",
                   help="the tutorial's 'testing forward()' check: one training batch and inference, then exit")
    p.add_argument("--demo", action="store_true",
                   help="offline demo: synthetic data, random init and a from-scratch recipe (demo.DEMO_RECIPE)")
    p.add_argument("--predict", nargs="+", default=None, metavar="PATH",
                   help="images or folders to run a trained model (--weights FILE) on; writes PNG + JSON")
    p.add_argument("--export", default=None, metavar="FILE.onnx",
                   help="write the model of --weights CHECKPOINT as ONNX to FILE.onnx (FILE.json beside it: classes, "
                        "input and outputs), once ONNX Runtime matches PyTorch on up to 8 of the checkpoint's test "
                        "images (or --predict's); None: no export (docs/export.md)")
    p.add_argument("--score-threshold", default=0.5, type=checks.unit_interval,
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
    checks.check_combinations(parser, args)
    try:
        result = main(args)
    except TrainingInterrupted as e:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run is over: a late press must not cut the message
        hint = f"; resume with: {training_run.resume_command(argv, e.checkpoint)}" if e.checkpoint else ""
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
        if not isinstance(e, MemoryError) and not training_run.is_out_of_memory(e):
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
    cli()
