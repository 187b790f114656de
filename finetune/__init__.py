"""Everything beside the tutorial script (tv_training.py) and the reference helpers, in rooms that
each import only the rooms below them (pyproject.toml's import-linter contract), top to bottom:

- run: the flags settled once, the training run's parts around the tutorial's loops, Ctrl-C;
- outputs: metrics, figures, --predict, the report, ONNX export and ONNX Runtime;
- models: the small Mask R-CNN, pretrained weights and weights files, checkpoints' model specs;
- speedups: faster layers, inference settings and mask pasting, with the same results;
- data: the dataset readers (Penn-Fudan, COCO, labelme, YOLO, synthetic) and loaders;
- hardware: the device, bfloat16 support, out-of-memory errors;
- errors, versions: the errors a user can fix; the torch/torchvision pair checked first.
"""
