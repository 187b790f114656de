"""The offline demo's run (``--demo``): its recipe (``DEMO_RECIPE``, the measured from-scratch
recipe of docs/demo.md), the values it gives the flags not typed, and its synthetic pedestrians."""

from finetune import hardware
from finetune.data.synthetic import make_synthetic_pennfudan

# The offline demo: synthetic pedestrians, random init (nothing to download). The tutorial's
# SGD lr 0.005 diverges from random init, and its ResNet-50 model learns too slowly on a CPU;
# these values are the measured recipe of docs/demo.md. Typed flags still win.
DEMO_RECIPE = dict(
    data_path="data/SyntheticPed", model="maskrcnn_resnet18", weights="none", opt="adamw", lr=6e-4,
    weight_decay=1e-4, clip_grad_norm=5.0, lr_scheduler="cosineannealinglr", epochs=7, batch_size=2,
    min_size=128, max_size=224,
    test_size=50, print_freq=50, workers=1,
)


DEMO_DATA = dict(num_images=480, height_range=(128, 160), width_range=(96, 224))


def make_demo_data(root, seed=0):
    """Write the demo's synthetic images (``DEMO_DATA``) to ``root`` in the Penn-Fudan layout."""
    print(f"Generating {DEMO_DATA['num_images']} synthetic images in {root}")
    make_synthetic_pennfudan(root, seed=seed, **DEMO_DATA)


def demo_values(typed, device):
    """The values ``--demo`` gives the flags not in ``typed`` (those typed on the command line):
    ``DEMO_RECIPE``'s, and ``amp`` (bfloat16) where the run is on a CPU (``device``: ``--device``)
    with bfloat16 instructions."""
    values = {key: value for key, value in DEMO_RECIPE.items() if key not in typed}
    if "amp" not in typed:
        values["amp"] = hardware.pick_device(device).type == "cpu" and hardware.cpu_has_bf16()
    return values
