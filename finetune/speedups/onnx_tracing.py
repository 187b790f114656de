"""Ship a trained model: ONNX export, checked against PyTorch, and prediction through ONNX Runtime.

    python tv_training.py --export model.onnx --weights output/checkpoint.pth
    python tv_training.py --predict photos/ --weights model.onnx

The export is torchvision's stock graph (``speedups.as_reference_model``: the speed-ups are
PyTorch-side only) traced by torch's TorchScript-based exporter at a fixed opset, one float RGB
image (CHW, 0..1, any height and width) in, ``boxes``/``labels``/``scores`` (and ``masks``) out.
The file is written beside ``<name>.json`` (classes, input and output conventions) and only once
ONNX Runtime, run on real images, gives PyTorch's detections within the tolerances below
(docs/export.md). ``OnnxPredictor`` answers like the PyTorch model, so ``outputs.predict``
writes the same files for both.

onnx and onnxruntime are imported inside the functions that need them: the rest of the project
runs without them.
"""

import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform


class _Float64Div(torch.autograd.Function):
    """``a / b`` exported as one ONNX Div: the exporter's own division casts float64 operands to
    float32, which rounds the resize scale differently from eager PyTorch."""

    @staticmethod
    def forward(ctx, a, b):
        return a / b

    @staticmethod
    def symbolic(g, a, b):
        return g.op("Div", a, b)


def _export_transform_class():
    """``GeneralizedRCNNTransform`` whose eval-time resize computes the output size in float64, as
    eager PyTorch does (a Python float scale, then floor(size x scale) in double). torchvision's
    traced path computes the scale in float32, and ONNX Runtime's Resize floors size x scale in
    float32: for some sizes (121 px x 128/121 = 127.99999) the exported model then works on an image
    one pixel smaller than PyTorch's, and an untrained or weak model's detections change."""

    class ExportTransform(GeneralizedRCNNTransform):
        def resize(self, image, target=None):
            if self.training or target is not None or self.fixed_size is not None:
                return super().resize(image, target)
            shape = torch._shape_as_tensor(image)[-2:].to(torch.float64)  # traced as a dynamic Shape
            # 1-element tensors, not 0-d ones: the exporter treats 0-d values as scalars and casts them to float32
            low, high = torch.minimum(shape[0:1], shape[1:2]), torch.maximum(shape[0:1], shape[1:2])
            # tensor / tensor (true division) in float64: Python's min_size / side, bit for bit
            scale = torch.minimum(_Float64Div.apply(torch.full_like(low, float(self.min_size[-1])), low),
                                  _Float64Div.apply(torch.full_like(high, float(self.max_size)), high))
            size = torch.floor(shape * scale).to(torch.int64)
            resized = torch.nn.functional.interpolate(image[None], size=(size[0], size[1]), mode="bilinear",
                                                      align_corners=False)
            return resized[0], target

    return ExportTransform
