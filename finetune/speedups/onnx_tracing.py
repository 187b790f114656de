"""What the ONNX export (``finetune.outputs.onnx_export.export_onnx``) traces instead of
torchvision's eval-time resize: ``traceable_transform(model)``, which makes the exported graph
compute the resized image size in float64 as eager PyTorch does, and puts the model back after.

Private APIs are used here: ``torch._shape_as_tensor`` (the image's shape as a tensor, traced as
a dynamic Shape) and ``GeneralizedRCNNTransform`` internals (its ``resize`` and the ``min_size``,
``max_size`` and ``fixed_size`` attributes it reads). Checked against torchvision 0.29.1
(torch 2.14.1) and 0.26.0 (torch 2.11.0).
"""

import contextlib

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


@contextlib.contextmanager
def traceable_transform(model):
    """Within the block, ``model.transform`` is ``_export_transform_class()``'s transform (same
    attributes, a resize the tracer follows as eager PyTorch computes it); on leaving, also on an
    exception or a Ctrl-C, it is given back its own class. Yields ``model``."""
    transform = model.transform
    own_class = type(transform)
    transform.__class__ = _export_transform_class()
    try:
        yield model
    finally:
        transform.__class__ = own_class
