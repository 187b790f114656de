"""The speed-ups room: this project's changes to torchvision's detection models, each keeping the
results, and the code that undoes them (``fast_layers``: ``speed_up_model`` and
``as_reference_model``; ``mask_paste``: mask pasting and masks as COCO RLE), the memory format
and bfloat16 backbone of an evaluation (``inference``), the resize the ONNX export traces
(``onnx_tracing``), the training step and evaluation without host syncs for a GPU
(``sync_free``) and the counter of those syncs (``op_count``). Private torch and torchvision APIs
are used in this room only: each module names those it uses and the torchvision release they
were checked against.
"""
