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

The sections follow the tutorial: the dataset, the models, the transforms, the forward() check,
then ``train`` and ``main``. What the tutorial does not have is one call each into the package
``finetune/``: its data readers (``finetune/data``), model descriptions and offline weights
(``finetune/models``), speed-ups (``finetune/speedups``), outputs (metrics, figures, --predict, the
report, ONNX: ``finetune/outputs``) and the run (settings, checks, checkpoints, Ctrl-C:
``finetune/run``). ``PennFudanDataset`` and the model builders need nothing of it: copy them alone.
"""

import argparse
import os
import signal
import sys
import time

if __name__ == "__main__":  # run as a script: Ctrl-C while torch loads (seconds) ends in one line, not a traceback
    signal.signal(signal.SIGINT, lambda *_: (os.write(2, b"\ninterrupted while starting: nothing was done\n"),
                                             os._exit(130)))

if sys.platform == "darwin":  # torch reads it once, as it loads: ops MPS lacks then run on the CPU (0 turns it off)
    os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")

from finetune import versions

try:  # a torchvision built for another torch fails here ("operator torchvision::nms does not exist")
    import torch
    import torchvision
except (ImportError, OSError, RuntimeError) as e:
    raise SystemExit(versions.broken_pair_line(e)) from None
import numpy as np
from PIL import Image
from torch.nn.parallel import DistributedDataParallel
from torchvision import tv_tensors
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.detection.rpn import AnchorGenerator
from torchvision.ops import masks_to_boxes
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

import utils
from engine import evaluate, train_one_epoch
from finetune import hardware
from finetune.data import augmentation, loaders
from finetune.data.formats import DataSplit, load_datasets, prepare_data
from finetune.data.loaders import make_loaders
from finetune.errors import TutorialError
from finetune.models import pretrained, small_maskrcnn, specs, torchvision_models
from finetune.outputs import metrics, onnx_export, onnx_runtime, prediction, report
from finetune.run import demo, exits, flags, optim, options, settings, training
from finetune.speedups import inference, mask_paste

# ---------------------------------------------------------------------------------------
# Defining the Dataset: PNGImages/X.png with PedMasks/X_mask.png (pixel value k = k-th pedestrian)
# ---------------------------------------------------------------------------------------

class PennFudanDataset(torch.utils.data.Dataset):
    """The tutorial's dataset: returns ``(image, target)`` with tv_tensors for the v2 transforms.

    Needs only torch, torchvision, PIL and numpy (which torchvision installs), so it can be copied
    alone. Each mask is found by its image's name (X.png, X_mask.png) rather than by sorted position;
    before training, ``finetune.data.pennfudan.check_dataset`` names any unpaired or unreadable file.
    """

    def __init__(self, root, transforms):
        self.root = root
        self.transforms = transforms
        # load all image files, sorting them; each mask is named after its image
        self.imgs = sorted(f for f in os.listdir(os.path.join(root, "PNGImages")) if f.lower().endswith(".png"))
        self.masks = [name[:-4] + "_mask.png" for name in self.imgs]
        self._sizes = {}

    def __getitem__(self, idx):
        # load images and masks; torchvision 0.29 deprecates read_image, so PIL decodes them
        img_path = os.path.join(self.root, "PNGImages", self.imgs[idx])
        mask_path = os.path.join(self.root, "PedMasks", self.masks[idx])
        with Image.open(img_path) as im:
            if im.mode.startswith("I"):  # 16-bit grayscale, scaled to 8 bits: convert("RGB") would clip it white
                im = Image.fromarray((np.clip(np.asarray(im), 0, 65535).astype(np.uint32) >> 8).astype(np.uint8))
            img = F.pil_to_tensor(im.convert("RGB"))
        with Image.open(mask_path) as im:  # grayscale or palette: the value k marks the k-th pedestrian
            mask = torch.from_numpy(np.asarray(im, dtype=np.int64))
        # instances are encoded as different colors; the first id is the background
        obj_ids = torch.unique(mask)
        obj_ids = obj_ids[obj_ids != 0]
        num_objs = len(obj_ids)

        # split the color-encoded mask into a set of binary masks
        masks = (mask == obj_ids[:, None, None]).to(dtype=torch.uint8)

        # get bounding box coordinates for each mask; a one-pixel-wide (or tall) instance gets a
        # 1-px box, as Mask R-CNN rejects boxes of no width
        boxes = masks_to_boxes(masks)
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)

        # there is only one class
        labels = torch.ones((num_objs,), dtype=torch.int64)

        image_id = idx
        area = (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 2] - boxes[:, 0])
        # suppose all instances are not crowd
        iscrowd = torch.zeros((num_objs,), dtype=torch.int64)

        # Wrap sample and targets into torchvision tv_tensors:
        img = tv_tensors.Image(img)

        target = {}
        target["boxes"] = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=F.get_size(img))
        target["masks"] = tv_tensors.Mask(masks)
        target["labels"] = labels
        target["image_id"] = image_id
        target["area"] = area
        target["iscrowd"] = iscrowd

        if self.transforms is not None:
            img, target = self.transforms(img, target)

        return img, target

    def get_height_and_width(self, idx):
        """Image size from the PNG header, without decoding (used to group batches by aspect ratio)."""
        if idx not in self._sizes:
            with Image.open(os.path.join(self.root, "PNGImages", self.imgs[idx])) as im:
                self._sizes[idx] = (im.height, im.width)
        return self._sizes[idx]

    def __len__(self):
        return len(self.imgs)


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
    # not in the tutorial either: torchvision's v2 recipe (stronger) and MobileNetV3-FPN (for a CPU)
    "maskrcnn_v2": torchvision_models.get_model_maskrcnn_v2,
    "fasterrcnn_v2": torchvision_models.get_model_fasterrcnn_v2,
    "fasterrcnn_mobilenet_v3": torchvision_models.get_model_fasterrcnn_mobilenet_v3,
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
                demo_settings=False, channels_last="auto", backbone=None):
    """The model to train or evaluate, on ``device``, with this project's speed-ups (all models).

    From a ``checkpoint`` it is rebuilt as the checkpoint describes (its classes too); otherwise
    ``model_name`` (a key of ``MODELS``) with ``weights`` ("DEFAULT", "none") for ``classes`` (and
    the demo's model settings with ``demo_settings``; ``backbone``: the builder's
    ``weights_backbone``/``trainable_backbone_layers`` where given). Returns ``(model, model_spec)``.
    """
    kwargs, anchors = small_maskrcnn.model_settings(model_name) if demo_settings else ({}, None)
    if model_name == "maskrcnn_resnet18":  # one network, with or without the demo's other settings
        kwargs = dict(small_maskrcnn.DEMO_SMALL_MODEL, **kwargs)
    kwargs = dict(min_size=min_size, max_size=max_size, **kwargs, **(backbone or {}))
    if checkpoint is not None:  # a plain state dict is taken as model_name with these settings
        spec, state = specs.checkpoint_spec(checkpoint, model_name, kwargs, anchors, classes), \
            checkpoint["model"]
    else:
        # the background plus one class per category
        spec = specs.model_spec(model_name, len(classes) + 1, weights, kwargs, anchors, classes)
        state = None if pretrained.is_random_init(weights) else weights
    model = specs.build_model(MODELS, spec, state)
    return specs.prepare_for_device(model, device, channels_last), spec


def without_ddp(model):
    """The model inside a DistributedDataParallel wrapper (the model itself outside torchrun)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def predict(weights, checkpoint, paths, opts, make_model):
    """``--predict``: the trained model of ``weights`` on the images in ``paths`` (files or
    folders), a PNG and a JSON each plus results.json in ``output_dir/predict``. A checkpoint
    (``checkpoint``, its contents) runs in PyTorch, built by ``make_model`` (``options.model_builder``);
    an .onnx file in ONNX Runtime. ``opts``: ``options.PredictionOptions``. Under torchrun,
    rank 0 alone predicts and writes the files."""
    if onnx_runtime.is_onnx_model(weights):
        return onnx_runtime.predict_command(weights, paths, opts.output_dir, opts.score_threshold, opts.overwrite,
                                            opts.typed_model, opts.device, opts.eval_bf16)
    if not utils.is_main_process():
        return {"predictions": []}
    device = hardware.pick_device(opts.device)
    model, spec = make_model(None, device, checkpoint)
    with inference.inference_speedups(model, device, opts.eval_bf16, opts.channels_last):
        return prediction.predict(model, paths, device, os.path.join(opts.output_dir or ".", "predict"),
                                  opts.score_threshold, spec["classes"], overwrite=opts.overwrite)


def evaluate_only(model, data_loader_test, coco_gt, device, classes, opts):
    """``--test-only``: the COCO tables and the per-class AP of ``model`` on the test set, and the
    report in ``output_dir``; ``opts``: ``options.EvaluationOptions``."""
    if coco_gt is None:
        raise TutorialError("--test-only with --test-size 0: there is no test image to evaluate.")
    with inference.inference_speedups(without_ddp(model), device, opts.eval_bf16, opts.channels_last):
        coco_evaluator = evaluate(model, data_loader_test, device=device, coco_gt=coco_gt)
    summary = metrics.evaluation_summary(coco_evaluator, classes)
    if opts.output_dir and opts.report_info is not None:  # from the detections just made: the model is not run again
        report.write_report(opts.output_dir, report.ReportInputs(
            coco_evaluator, data_loader_test.dataset, classes, report.run_info(**opts.report_info), summary,
            opts.score_threshold, records=opts.report_info.get("records")))
    return summary


def train(model, optimizer, lr_scheduler, data_loader, data_loader_test, device, num_epochs, run):
    """The tutorial's loop: ``num_epochs`` of ``train_one_epoch``, the lr step and COCO evaluation.

    ``run`` (``finetune.run.training.TrainingRun``) adds this project's steps around it: exact
    seeds per epoch, the checkpoint, best.pth, metrics and figures after each epoch, the report at
    the end, Ctrl-C at a safe point. Returns the last epoch's metrics and ``records``."""
    if run.start_epoch >= num_epochs:  # a finished run, resumed: nothing to train
        return run.result()
    model_without_ddp = without_ddp(model)
    with run.safe_points() as stop:
        print("Start training")
        start_time = time.time()
        data_loader, data_loader_test = stop.wrap(data_loader), stop.wrap(data_loader_test)
        coco_evaluator = None
        for epoch in range(run.start_epoch, num_epochs):
            run.sampling.seed_epoch(epoch)  # (seed, epoch) alone: a resumed run repeats the uninterrupted one
            epoch_start = time.time()
            losses = run.loss_history(optimizer, epoch, len(data_loader))  # a list; --tensorboard: written live
            # train for one epoch, printing every print_freq iterations
            metric_logger = train_one_epoch(model, optimizer, data_loader, device, epoch,
                                            print_freq=run.options.print_freq, scaler=run.options.scaler,
                                            loss_history=losses, clip_grad_norm=run.options.clip_grad_norm,
                                            amp_dtype=run.options.amp_dtype)
            lr = optimizer.param_groups[0]["lr"]
            # update the learning rate
            lr_scheduler.step()
            train_time = time.time() - epoch_start
            # evaluate on the test dataset
            if run.evaluation.coco_gt is not None:
                with run.fast_evaluation(model_without_ddp, device):
                    coco_evaluator = evaluate(model, data_loader_test, device=device, coco_gt=run.evaluation.coco_gt)
            # the epoch's record, checkpoint.pth, best.pth, metrics.json and curves.png
            run.end_epoch(model_without_ddp, optimizer, lr_scheduler, epoch,
                          (lr, train_time, time.time() - epoch_start), (metric_logger, losses), coco_evaluator)
        print(f"Training time {time.strftime('%H:%M:%S', time.gmtime(time.time() - start_time))}")
        print("That's it!")
        run.finish(model_without_ddp, device, data_loader_test.dataset, coco_evaluator)  # figures, the report
    return run.result()


def main(args):
    """Run the tutorial; returns a dict with the final metrics (``bbox``/``segm``: 12 named COCO numbers)."""
    # the settings, once: the flags, then --demo's recipe, then a checkpoint's (finetune/run/settings.py)
    args, checkpoint = settings.settle(args, pretrained.load_weights_file)
    if args.export:  # the checkpoint as ONNX, checked against PyTorch (finetune/outputs/onnx_export.py)
        return onnx_export.export_command(args.weights, args.export, options.model_builder(args, build_model),
                                          (PennFudanDataset, get_transform),
                                          args.predict, args.score_threshold, args.overwrite,
                                          settings.typed_model(args))
    if args.predict:  # a trained model (checkpoint or .onnx) on your images: a PNG and a JSON each
        return predict(args.weights, checkpoint, args.predict, options.prediction_options(args),
                       options.model_builder(args, build_model))
    device = hardware.pick_device(args.device, args.gpu)  # --device auto: CUDA when present, else the CPU
    torch.manual_seed(args.seed)

    # the data: Penn-Fudan (downloaded), the demo's (generated) or your own, with get_transform
    prepare_data(args.data_path, demo.make_demo_data if args.demo else None)
    data = load_datasets(args.data_path, PennFudanDataset, options.data_transform(args, get_transform),
                         DataSplit(args.test_size, args.train_size, args.seed), args.test_data_path, args.image_dir,
                         check=utils.is_main_process(), class_names=args.classes, reading=options.read_options(args))
    args = settings.settle_for_data(args, data, checkpoint)  # box-only data: Faster R-CNN
    data_loader, data_loader_test, train_sampler, shuffle_gen = make_loaders(
        data["train"], data["test"], args.batch_size, loaders.loader_workers(args.workers), args.distributed,
        args.seed, args.aspect_ratio_group_factor, pin_memory=device.type == "cuda",
        train_collate=augmentation.train_collate(args.use_copypaste))  # --use-copypaste: in the training batches

    # the model from its builder above, moved to the device (wrapped in DDP under torchrun)
    model_without_ddp, spec = options.model_builder(args, build_model)(data["classes"], device, checkpoint)
    augmentation.train_at_preset_size(model_without_ddp, args.data_augmentation)  # lsj, multiscale: as they sized
    model = DistributedDataParallel(model_without_ddp, [args.gpu] if args.gpu is not None else None) \
        if args.distributed else model_without_ddp
    if args.check_forward:
        return {"losses": {k: v.item() for k, v in check_forward(model_without_ddp, data_loader, device)[0].items()}}
    mask_paste.compact_masks(model_without_ddp)  # evaluation: masks as RLE, memory bounded on big images
    report_info = settings.report_info(args, checkpoint, data["classes"], spec["model"], device, len(data["test"]))
    if args.test_only:
        return evaluate_only(model, data_loader_test, data["coco_gt"], device, data["classes"],
                             options.evaluation_options(args, report_info))

    # SGD and StepLR as in the tutorial (--opt / --lr-scheduler offer alternatives); --resume restores them
    optimizer = optim.make_optimizer(model_without_ddp, args.opt, args.lr, args.momentum, args.weight_decay)
    lr_scheduler = optim.make_lr_scheduler(optimizer, args.lr_scheduler, args.epochs, args.lr_step_size,
                                           args.lr_gamma)
    run = options.training_run(args, checkpoint, data, spec, report_info, (optimizer, lr_scheduler, device),
                                training.Sampling(args.seed, train_sampler, shuffle_gen))
    return train(model, optimizer, lr_scheduler, data_loader, data_loader_test, device, args.epochs, run)


def get_args_parser(add_help=True):
    """torchvision train.py's flag names, the tutorial's values as defaults."""
    p = settings.ExplicitArgumentParser(description="TorchVision Object Detection Finetuning Tutorial",
                                    add_help=add_help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-path", default="data/PennFudanPed", type=flags.path_text,
                   help="dataset root with PNGImages/ and PedMasks/ (downloaded when missing); or your own data: a "
                        "COCO instances file (.json), a folder of labelme JSONs, a YOLO data.yaml, a Pascal VOC folder "
                        "(Annotations/ + JPEGImages/, or XMLs beside their images)")
    p.add_argument("--test-data-path", default=None, type=flags.path_text,
                   help="a COCO file (or labelme or VOC folder) to test on (same categories); None: hold out "
                        "--test-size images of --data-path (a YOLO data.yaml tests on its val split, a VOC folder on "
                        "its ImageSets/Main/val.txt or test.txt)")
    p.add_argument("--image-dir", default=None, type=flags.path_text,
                   help="where a COCO file's (or VOC folder's) images are; None: looked for beside the file (VOC: "
                        "in JPEGImages/, then beside each XML; docs/own-data.md)")
    p.add_argument("--skip-missing-images", action="store_true",
                   help="train on the images of a COCO file (or VOC folder) that are on disk, leaving out (with one "
                        "warning) those that are not; default: off, a missing image is an error that lists them")
    p.add_argument("--crowd-as-objects", action="store_true",
                   help="train on a COCO file's crowd regions (iscrowd 1; a VOC folder's difficult objects) as "
                        "objects, as CVAT marks the masks it exports; default: off, they are ignore regions as in COCO")
    p.add_argument("--classes", default=None, type=flags.class_list, metavar="A,B,C",
                   help="a labelme (or VOC) folder's classes in this order, other labels left out; None: every "
                        "label, sorted (docs/own-data.md)")
    p.add_argument("--model", default="maskrcnn", choices=sorted(MODELS),
                   help="maskrcnn (the tutorial), fasterrcnn (section 1), mobilenet (section 2), "
                        "maskrcnn_resnet18 (small Mask R-CNN for training from scratch; --demo's), maskrcnn_v2 / "
                        "fasterrcnn_v2 (torchvision's stronger v2 recipe), fasterrcnn_mobilenet_v3 (MobileNetV3-"
                        "Large FPN: fast on a CPU); docs/recipes.md")
    p.add_argument("--weights", default="DEFAULT", type=flags.path_text,
                   help="DEFAULT (pretrained, downloaded: COCO; an ImageNet backbone for mobilenet and "
                        "maskrcnn_resnet18), a torchvision weight enum name (e.g. "
                        "MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1), none (random init) or a checkpoint file")
    p.add_argument("--weights-backbone", default=None,
                   help="ImageNet backbone weights as a torchvision enum name (ResNet50_Weights.IMAGENET1K_V1; "
                        "fasterrcnn_mobilenet_v3: MobileNet_V3_Large_Weights.IMAGENET1K_V1), its short name "
                        "(IMAGENET1K_V1) or DEFAULT, used with --weights none, as train.py; default: None (no "
                        "backbone weights; --weights DEFAULT has its own)")
    p.add_argument("--trainable-backbone-layers", default=None, type=flags.non_negative_int,
                   help="backbone stages that train with pretrained weights, as train.py: 0 to 5 (fasterrcnn_"
                        "mobilenet_v3: 0 to 6); default: None, torchvision's (3; all with random init)")
    p.add_argument("--device", default="auto", type=flags.device_flag,
                   help="cuda, cuda:N, mps, cpu or auto (cuda when available, then Apple's mps, else cpu)")
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
                   help="replace the run (or --predict's results) already in --output-dir, or --export's FILE.onnx "
                        "(without it, such a run or file stops this one)")
    p.add_argument("--test-only", action="store_true",
                   help="only evaluate (with --resume or --weights FILE), print the COCO tables and write "
                        "--output-dir/report/ (an earlier report moves to report/earlier/)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                   help="mixed precision for training: float16 + GradScaler on CUDA, bfloat16 on CPU (no loss "
                        "scaling needed; slow without bf16 hardware); --demo turns it on for a CPU with bf16 "
                        "instructions")
    p.add_argument("--amp-dtype", default="auto", choices=["auto", "bfloat16", "float16"],
                   help="what --amp autocasts to: auto (bfloat16 on GPUs that have it, Ampere on, and on the CPU; "
                        "float16 + GradScaler on older GPUs), bfloat16 (no GradScaler), float16 (+ GradScaler, CUDA "
                        "only); the log says which")
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
    p.add_argument("--data-augmentation", default="hflip", choices=augmentation.PRESETS,
                   help="training augmentation, torchvision train.py's presets: hflip (the tutorial's flip), lsj "
                        "(large-scale jitter), multiscale, ssd, ssdlite; sizes follow --min-size (docs/recipes.md)")
    p.add_argument("--use-copypaste", action="store_true",
                   help="Simple Copy-Paste between the images of each training batch (with --data-augmentation lsj "
                        "and masks, as train.py); default: off")
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
                        "from 0 to 1 (under torchvision's own 0.05, --predict lowers the model's to it)")
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=False,
                   help="also write TensorBoard event files to --output-dir/tensorboard/ (losses and lr per "
                        "iteration, COCO numbers and per-class AP per epoch, the prediction figures; needs pip "
                        "install tensorboard; view: tensorboard --logdir output/tensorboard); default: off")
    p.add_argument("--dist-url", default="env://", help="url used to set up distributed training")
    return p


def cli(argv=None):
    """Command-line entry: user errors print one line (no traceback) and exit non-zero.

    Returns what ``main`` returns. Under torchrun, a run that ends normally destroys its
    process group (after an error the process just exits: tearing down a group whose other
    ranks may still wait in a collective could block, and torchrun stops them anyway).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    too_old = versions.unsupported_line(torch.__version__, torchvision.__version__)
    if too_old:
        sys.exit(too_old)
    parser = get_args_parser()
    args = parser.parse_args(argv)
    settings.check_combinations(parser, args)
    left_behind = exits.interrupted_line(args.export, args.predict, args.output_dir, args.test_only)
    with exits.one_line_errors(argv, left_behind):
        result = main(args)
    utils.cleanup_distributed()
    exits.check_failed_images(result)
    return result


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # loaded: Ctrl-C is the run's own again
    cli()
