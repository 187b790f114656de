"""The five reference helpers, and tv_training.PennFudanDataset, work copied alone next to a
user's own tutorial-style script.

The helpers (engine.py, utils.py, coco_utils.py, coco_eval.py, transforms.py) are copied into an
empty folder with a script written in the tutorial's style: its own Penn-Fudan dataset class
(PIL, ``import transforms as T``), a torchvision Mask R-CNN, ``train_one_epoch`` and ``evaluate``.
Nothing else of this project is importable there.
"""

import inspect
import os
import shutil
import subprocess
import sys

from conftest import ROOT_DIR, make_data

import tv_training

HELPERS = ("engine.py", "utils.py", "coco_utils.py", "coco_eval.py", "transforms.py")

# A random-init Mask R-CNN for two classes, small enough to train a step and evaluate in seconds
# (tiny images and few boxes: the helpers run the same code on fewer)
TINY_MODEL = '''model = torchvision.models.detection.maskrcnn_resnet50_fpn(
    weights=None, weights_backbone=None, min_size=64, max_size=96, box_batch_size_per_image=16,
    rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20, box_detections_per_img=10)
model.roi_heads.box_predictor = FastRCNNPredictor(model.roi_heads.box_predictor.cls_score.in_features, 2)
model.roi_heads.mask_predictor = MaskRCNNPredictor(256, 256, 2)'''

SCRIPT = '''
import os, sys
import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

import transforms as T
import utils
from engine import evaluate, train_one_epoch

for name in ("tv_training", "finetune"):
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{name} should not be importable here")


class PedDataset(torch.utils.data.Dataset):
    def __init__(self, root, transforms):
        self.root, self.transforms = root, transforms
        self.imgs = sorted(os.listdir(os.path.join(root, "PNGImages")))
        self.masks = sorted(os.listdir(os.path.join(root, "PedMasks")))

    def __getitem__(self, idx):
        img = Image.open(os.path.join(self.root, "PNGImages", self.imgs[idx])).convert("RGB")
        mask = np.array(Image.open(os.path.join(self.root, "PedMasks", self.masks[idx])))
        obj_ids = np.unique(mask)[1:]
        masks = mask == obj_ids[:, None, None]
        boxes = []
        for m in masks:
            ys, xs = np.where(m)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        boxes = torch.as_tensor(boxes, dtype=torch.float32)
        target = {"boxes": boxes, "labels": torch.ones((len(obj_ids),), dtype=torch.int64),
                  "masks": torch.as_tensor(masks, dtype=torch.uint8), "image_id": torch.tensor([idx]),
                  "area": (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 2] - boxes[:, 0]),
                  "iscrowd": torch.zeros((len(obj_ids),), dtype=torch.int64)}
        img, target = self.transforms(img, target)
        return img, target

    def __len__(self):
        return len(self.imgs)


def get_transform(train):
    transforms = [T.PILToTensor(), T.ConvertImageDtype(torch.float)]
    if train:
        transforms.append(T.RandomHorizontalFlip(0.5))
    return T.Compose(transforms)


torch.manual_seed(0)
torch.set_num_threads(1)
root = sys.argv[1]
dataset = torch.utils.data.Subset(PedDataset(root, get_transform(train=True)), [0, 1, 2, 3])
dataset_test = torch.utils.data.Subset(PedDataset(root, get_transform(train=False)), [4, 5])
data_loader = torch.utils.data.DataLoader(dataset, batch_size=2, shuffle=True, collate_fn=utils.collate_fn)
data_loader_test = torch.utils.data.DataLoader(dataset_test, batch_size=1, collate_fn=utils.collate_fn)
{tiny_model}
params = [p for p in model.parameters() if p.requires_grad]
optimizer = torch.optim.SGD(params, lr=0.001, momentum=0.9, weight_decay=0.0005)
lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.1)
train_one_epoch(model, optimizer, data_loader, torch.device("cpu"), 0, print_freq=1)
lr_scheduler.step()
coco_evaluator = evaluate(model, data_loader_test, device=torch.device("cpu"))
print("stats", len(coco_evaluator.coco_eval["bbox"].stats), len(coco_evaluator.coco_eval["segm"].stats))
print("That's it!")
'''


def run_alone(tmp_path, script, seed):
    """``script`` (with TINY_MODEL filled in) run in an empty folder holding only the five helpers,
    on 6 synthetic Penn-Fudan images; returns its stdout. The project's root must not be importable
    there; other PYTHONPATH entries (a site folder the environment relies on, such as where
    pycocotools was installed) stay."""
    data = make_data(tmp_path / "PennFudanPed", num_images=6, seed=seed)
    work = tmp_path / "my_project"
    work.mkdir()
    for name in HELPERS:
        shutil.copy(os.path.join(ROOT_DIR, name), work / name)
    (work / "tutorial.py").write_text(script.replace("{tiny_model}", TINY_MODEL))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                        if p and os.path.realpath(p) != os.path.realpath(ROOT_DIR))
    proc = subprocess.run([sys.executable, "tutorial.py", data], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_the_five_helpers_work_copied_alone(tmp_path):
    out = run_alone(tmp_path, SCRIPT, seed=2)
    assert "Epoch: [0]  [0/2]" in out and "Epoch: [0] Total time:" in out
    assert "Test:  [0/2]" in out and "IoU metric: bbox" in out and "IoU metric: segm" in out
    assert "stats 12 12" in out and out.rstrip().endswith("That's it!")



# The tutorial's own script around the class: its imports (plus PIL and numpy, which torchvision
# installs and the class decodes with), the v2 get_transform, a Mask R-CNN and the loop.
TUTORIAL_MAIN = '''
import os, sys
import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision import tv_tensors
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.ops.boxes import masks_to_boxes
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

import utils
from engine import evaluate, train_one_epoch

try:
    import finetune
except ImportError:
    pass
else:
    raise SystemExit("the project's package should not be importable here")

{dataset_class}

{get_transform}


torch.manual_seed(0)
torch.set_num_threads(1)
root = sys.argv[1]
dataset = PennFudanDataset(root, get_transform(train=True))
dataset_test = PennFudanDataset(root, get_transform(train=False))
indices = torch.randperm(len(dataset)).tolist()
dataset = torch.utils.data.Subset(dataset, indices[:4])
dataset_test = torch.utils.data.Subset(dataset_test, indices[4:])
data_loader = torch.utils.data.DataLoader(dataset, batch_size=2, shuffle=True, collate_fn=utils.collate_fn)
data_loader_test = torch.utils.data.DataLoader(dataset_test, batch_size=1, shuffle=False, collate_fn=utils.collate_fn)
{tiny_model}
params = [p for p in model.parameters() if p.requires_grad]
optimizer = torch.optim.SGD(params, lr=0.005, momentum=0.9, weight_decay=0.0005)
lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.1)
for epoch in range(1):
    train_one_epoch(model, optimizer, data_loader, torch.device("cpu"), epoch, print_freq=10)
    lr_scheduler.step()
    evaluate(model, data_loader_test, device=torch.device("cpu"))
print("That's it!")
'''


def test_the_dataset_class_works_copied_alone_with_the_tutorial_main(tmp_path):
    """tv_training.PennFudanDataset's and get_transform's own source, pasted into the tutorial's script
    beside the five helpers in an empty folder, train and evaluate: they need nothing of the package."""
    script = TUTORIAL_MAIN.replace("{dataset_class}", inspect.getsource(tv_training.PennFudanDataset))
    script = script.replace("{get_transform}", inspect.getsource(tv_training.get_transform))
    out = run_alone(tmp_path, script, seed=3)
    assert "Epoch: [0]  [0/2]" in out and "IoU metric: bbox" in out and "IoU metric: segm" in out
    assert out.rstrip().endswith("That's it!")
