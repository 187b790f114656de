"""How many ops a training step or an evaluation dispatches, and how many of them make a GPU wait.

    with OpCounter() as counter:
        losses = sum(model(images, targets).values()); losses.backward()
    counter.total, counter.syncs   # ops dispatched; the data-dependent ones, per op name

On a GPU the host queues kernels ahead of the device, unless an op's result size or value has to
be read back first: ``nonzero`` (and ``torch.where(mask)``, ``argwhere``), ``masked_select``,
boolean-mask indexing, ``unique``, ``repeat_interleave`` by a tensor, ``.item()``/``bool()``/``int()``
of a tensor (``_local_scalar_dense``), NMS (its output size), and ``randperm`` (counted as torchvision
uses it: its size comes from a ``nonzero`` result). Counting them under a ``TorchDispatchMode`` on
the CPU shows what the same step would wait on on a GPU, since the model runs the same ops there.
Not seen: a ``.tolist()`` or ``.cpu()`` of a CPU tensor (no op is dispatched on the CPU; on a GPU
it is a copy to the host, which syncs).

Private torch APIs used here: ``TorchDispatchMode`` (``torch.utils._python_dispatch``),
``torch.utils._pytree``. Checked against torch 2.14.1 (torchvision 0.29.1).
"""

import collections

import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakTensorKeyDictionary

# ops whose result size or value the host reads before it can queue what follows
SIZE_FROM_DATA = frozenset({
    "aten::nonzero", "aten::masked_select", "aten::_unique", "aten::_unique2", "aten::unique_dim",
    "aten::unique_consecutive", "aten::unique_dim_consecutive", "aten::repeat_interleave",
    "aten::_local_scalar_dense", "aten::randperm", "torchvision::nms", "aten::masked_scatter",
    "aten::masked_scatter_", "aten::item", "aten::nonzero_numpy", "aten::argwhere", "aten::is_nonzero",
})
# ops that sync when one of their indices is a boolean mask (converted to indices by nonzero)
BOOL_INDEXED = frozenset({"aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_"})


def _has_bool_index(args):
    indices = args[1] if len(args) > 1 else ()
    return any(torch.is_tensor(i) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


def syncs_on_gpu(name, args, kwargs):
    """Whether an op (its schema name, e.g. ``aten::nonzero``) called with ``args`` and ``kwargs``
    on the device needs a value from it before the host can go on."""
    if name == "aten::repeat_interleave":  # the repeats tensor's sum, unless given
        return kwargs.get("output_size") is None
    if name in ("aten::index_put", "aten::index_put_", "aten::_index_put_impl_"):
        # ``x[mask] = number``: torch passes a CPU scalar, which runs as masked_fill on the GPU
        value = args[2] if len(args) > 2 else None
        return _has_bool_index(args) and not (torch.is_tensor(value) and value.dim() == 0)
    if name in SIZE_FROM_DATA:
        return True
    return name in BOOL_INDEXED and _has_bool_index(args)


def _tensors(tree):
    return [t for t in pytree.tree_leaves(tree) if isinstance(t, torch.Tensor)]


class OpCounter(TorchDispatchMode):
    """Within the block, every op dispatched (forward and backward) is counted by schema name in
    ``ops``; those that sync on a GPU (``syncs_on_gpu``) in ``syncs`` when they read the model's
    data, in ``host_reads`` when they read a tensor the host made for itself.

    Which is which: the tensors in ``device_tensors`` (the model's parameters and buffers, the
    inputs), whatever an op computes from one of them, and what a factory op makes with an
    explicit ``device=`` are on the model's device; a tensor made without a device (e.g.
    torchvision's ``torch.tensor(scale).log2().item()`` or ``torch.empty(1).uniform_()``) stays on
    the host even when the model is on a GPU, and reading it waits for nothing.
    """

    def __init__(self, device_tensors=()):
        super().__init__()
        self.ops = collections.Counter()
        self.syncs = collections.Counter()
        self.host_reads = collections.Counter()
        self._on_device = WeakTensorKeyDictionary()
        for t in device_tensors:
            self._on_device[t] = True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        kwargs = kwargs or {}
        self.ops[name] += 1
        inputs = _tensors((args, kwargs))
        on_device = any(t in self._on_device for t in inputs) or (not inputs and kwargs.get("device") is not None)
        if syncs_on_gpu(name, args, kwargs):
            (self.syncs if on_device else self.host_reads)[name] += 1
        out = func(*args, **kwargs)
        if on_device:
            for t in _tensors(out):
                self._on_device[t] = True
        return out

    def __enter__(self):
        # a copy to the host dispatches nothing on the CPU, yet syncs on a GPU: counted by name
        self._host_copies = {name: getattr(torch.Tensor, name) for name in ("tolist", "numpy", "cpu")}
        for name, plain in self._host_copies.items():
            setattr(torch.Tensor, name, self._counting(name, plain))
        return super().__enter__()

    def __exit__(self, *exc):
        for name, plain in self._host_copies.items():
            setattr(torch.Tensor, name, plain)
        return super().__exit__(*exc)

    def _counting(self, name, plain):
        def method(tensor, *args, **kwargs):
            if tensor in self._on_device:
                self.syncs[f"Tensor.{name}"] += 1
            return plain(tensor, *args, **kwargs)
        return method

    @property
    def total(self):
        return sum(self.ops.values())

    @property
    def total_syncs(self):
        return sum(self.syncs.values())


def example_batch(size=256, n=2):
    """The counted step's batch: ``n`` random ``size``-px images (seed 0) with two people each, as
    boxes and masks (their boxes scaled from a 256-px image's)."""
    gen = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[20.0, 30.0, 120.0, 200.0], [130.0, 40.0, 230.0, 250.0]]) * size / 256
    images, targets = [], []
    for _ in range(n):
        images.append(torch.rand(3, size, size, generator=gen))
        masks = torch.zeros(2, size, size, dtype=torch.uint8)
        for j, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
            masks[j, y0:y1, x0:x1] = 1
        targets.append(dict(boxes=boxes.clone(), labels=torch.ones(2, dtype=torch.int64), masks=masks))
    return images, targets


def _model_tensors(model, images, targets=None):
    tensors = list(model.parameters()) + list(model.buffers()) + _tensors(images) + _tensors(targets)
    return tensors + [t.grad for t in model.parameters() if t.grad is not None]


def count_training_step(model, images, targets):
    """An ``OpCounter`` over one forward and backward of ``model`` (in training mode) on a batch."""
    model.train()
    with OpCounter(_model_tensors(model, images, targets)) as counter:
        losses = model(images, targets)
        sum(losses.values()).backward()
    model.zero_grad(set_to_none=True)
    return counter


def count_evaluation(model, images):
    """An ``OpCounter`` over ``model``'s inference on ``images``, one image per call (as the
    tutorial's evaluation runs), the counts summed. Under ``no_grad``: ``inference_mode`` hands
    the mode composite ops (``item``, ``nonzero_numpy``) undecomposed, ``no_grad`` the ops that run."""
    model.eval()
    with torch.no_grad(), OpCounter(_model_tensors(model, images)) as counter:
        for image in images:
            model([image])
    return counter
