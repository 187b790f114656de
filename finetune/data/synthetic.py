"""Synthetic pedestrians in the exact Penn-Fudan layout, for offline runs and tests.

    python -m finetune.data.synthetic data/SyntheticPed --num-images 170 --seed 0

writes ``PNGImages/SynthPedNNNNN.png`` (RGB) and ``PedMasks/SynthPedNNNNN_mask.png``
(8-bit grayscale, pixel value k = k-th pedestrian, 0 = background), the same layout
that ``PennFudanDataset`` reads from the real dataset.

Each image has 1-4 upright, pedestrian-like figures (head, torso, arms, legs; about
2.5:1 height:width; 30-90% of the image height) with varied clothing colours and
textures, drawn over a cluttered street-like background. Figures may overlap: a
nearer (larger) figure is drawn later and hides part of the one behind it, so
masks occlude each other exactly like the real masks do. Output is a pure function
of the seed.

With ``--coco``, ``--labelme`` or ``--yolo NUM_VAL`` (``make_synthetic_coco``,
``make_synthetic_labelme``, ``make_synthetic_yolo``) the same kind of scenes, with balls and
signs beside the pedestrians, are written as a COCO, labelme or YOLO dataset instead.
"""

import argparse
import base64
import contextlib
import io
import json
import math
import os
import shutil
import tempfile

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from finetune.data.masks import mask_to_rle, segmentation_mask
from finetune.data.pennfudan import dataset_folder_being_written

# Sizes of the real Penn-Fudan images (width 253-1017 px, height 311-581 px).
REAL_HEIGHT_RANGE = (311, 581)


REAL_WIDTH_RANGE = (253, 1017)


def _random_colour(rng, lo=0, hi=255):
    return tuple(int(c) for c in rng.integers(lo, hi + 1, size=3))


def _background(rng, width, height):
    """Street-like clutter: sky/ground gradient, buildings, windows, poles, noise."""
    horizon = int(height * rng.uniform(0.35, 0.65))
    top, bottom = np.array(_random_colour(rng, 60, 230), float), np.array(_random_colour(rng, 40, 200), float)
    ground = np.array(_random_colour(rng, 50, 160), float)
    ys = np.linspace(0.0, 1.0, height)[:, None, None]
    img = top * (1 - ys) + bottom * ys
    img = np.repeat(img, width, axis=1)
    img[horizon:] = ground + rng.normal(0, 8, size=(height - horizon, 1, 3))
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    # buildings with windows
    x = int(rng.integers(-width // 8, width // 8))
    while x < width:
        bw = int(rng.integers(max(8, width // 10), max(9, width // 3)))
        bh = int(rng.integers(max(6, horizon // 3), max(7, horizon + 1)))
        colour = _random_colour(rng, 40, 220)
        draw.rectangle([x, horizon - bh, x + bw, horizon], fill=colour)
        win = max(2, bw // 8)
        wcol = _random_colour(rng, 0, 255)
        for wy in range(horizon - bh + win, horizon - win, 2 * win):
            for wx in range(x + win, x + bw - win, 2 * win):
                if rng.random() < 0.7:
                    draw.rectangle([wx, wy, wx + win - 1, wy + win - 1], fill=wcol)
        x += bw + int(rng.integers(0, max(1, width // 12)))
    # poles, signs, kerb lines and blobs: distractors with pedestrian-like colours
    for _ in range(int(rng.integers(2, 7))):
        px = int(rng.integers(0, width))
        pw = max(1, int(width * rng.uniform(0.005, 0.02)))
        draw.rectangle([px, int(horizon * rng.uniform(0.1, 0.8)), px + pw, height], fill=_random_colour(rng))
    for _ in range(int(rng.integers(1, 4))):
        y = int(rng.integers(horizon, height))
        draw.line([0, y, width, y + int(rng.integers(-height // 8, height // 8 + 1))],
                  fill=_random_colour(rng), width=max(1, height // 100))
    for _ in range(int(rng.integers(3, 10))):
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(2, max(3, min(width, height) // 10)))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_random_colour(rng))
    arr = np.asarray(canvas, dtype=np.float32)
    arr += rng.normal(0, rng.uniform(3, 12), size=arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _figure_silhouette(rng, width, height, x0, y0, h):
    """One pedestrian shape as a 0/255 'L' image and a part label image (1=head, 2=top, 3=legs)."""
    w = h / rng.uniform(2.2, 2.8)
    sil = Image.new("L", (width, height), 0)
    parts = Image.new("L", (width, height), 0)
    ds, dp = ImageDraw.Draw(sil), ImageDraw.Draw(parts)
    cx = x0 + w / 2

    def shape(kind, label, geometry, **kw):
        # the same primitive goes into the silhouette (255) and the part map (label)
        getattr(ds, kind)(geometry, fill=255, **kw)
        getattr(dp, kind)(geometry, fill=label, **kw)

    head_h = h * rng.uniform(0.12, 0.15)
    head_w = head_h * rng.uniform(0.75, 0.9)
    shape("ellipse", 1, [cx - head_w / 2, y0, cx + head_w / 2, y0 + head_h])
    neck = y0 + head_h * 0.95
    hip = y0 + h * rng.uniform(0.5, 0.56)
    shoulder_w = w * rng.uniform(0.6, 0.8)
    hip_w = w * rng.uniform(0.45, 0.6)
    torso = [(cx - shoulder_w / 2, neck), (cx + shoulder_w / 2, neck), (cx + hip_w / 2, hip), (cx - hip_w / 2, hip)]
    shape("polygon", 2, torso)
    arm_w = max(1, int(w * rng.uniform(0.1, 0.16)))
    for side in (-1, 1):
        swing = side * w * rng.uniform(0.0, 0.35)
        pts = [(cx + side * shoulder_w / 2.2, neck + arm_w / 2), (cx + side * shoulder_w / 2 + swing, hip + h * 0.05)]
        shape("line", 2, pts, width=arm_w)
    leg_w = max(1, int(w * rng.uniform(0.16, 0.24)))
    stride = w * rng.uniform(0.0, 0.45)
    for side in (-1, 1):
        pts = [(cx + side * hip_w / 4, hip - 1), (cx + side * (hip_w / 4 + stride / 2), y0 + h - leg_w / 2)]
        shape("line", 3, pts, width=leg_w)
    return np.asarray(sil) > 0, np.asarray(parts)


def _texture(rng, height, width, colour):
    """A clothing texture: flat, stripes, checks or noise around a base colour."""
    base = np.array(colour, np.float32)[None, None, :]
    kind = rng.integers(0, 4)
    yy, xx = np.mgrid[0:height, 0:width]
    if kind == 0:
        pattern = np.zeros((height, width), np.float32)
    elif kind == 1:
        period = rng.uniform(3, 12)
        pattern = np.sin(yy / period * 2 * math.pi)
    elif kind == 2:
        period = rng.uniform(4, 14)
        pattern = np.sign(np.sin(yy / period * math.pi) * np.sin(xx / period * math.pi))
    else:
        pattern = rng.normal(0, 1, size=(height, width))
    tex = base + pattern[..., None] * rng.uniform(10, 45)
    return np.clip(tex, 0, 255)


def make_synthetic_image(rng, height, width, max_instances=4, min_visible=0.35):
    """Return (RGB uint8 array HxWx3, uint8 mask HxW with values 0..k)."""
    img = _background(rng, width, height).astype(np.float32)
    n = int(rng.integers(1, max_instances + 1))
    heights = sorted(rng.uniform(0.3, 0.9, size=n) * height)  # far (small) first, near (large) last
    label_map = np.zeros((height, width), np.int32)
    full_masks = []
    for h in heights:
        w = h / 2.5
        x0 = rng.uniform(-0.1 * w, max(-0.1 * w + 1, width - 0.9 * w))
        y0 = rng.uniform(0, max(1.0, height - h))
        sil, parts = _figure_silhouette(rng, width, height, x0, y0, h)
        if sil.sum() < 16:
            continue
        skin, top, legs = _random_colour(rng, 90, 240), _random_colour(rng), _random_colour(rng, 0, 200)
        for label, colour in ((1, skin), (2, top), (3, legs)):
            region = parts == label
            if region.any():
                img[region] = _texture(rng, height, width, colour)[region]
        full_masks.append(sil)
        label_map[sil] = len(full_masks)
    # Keep only figures that stay visible enough after occlusion; renumber 1..k.
    mask = np.zeros((height, width), np.uint8)
    k = 0
    for i, sil in enumerate(full_masks, start=1):
        visible = label_map == i
        if visible.sum() >= max(16, min_visible * sil.sum()):
            k += 1
            mask[visible] = k
        else:  # mostly hidden: its pixels go back to the background label
            label_map[visible] = 0
    if k == 0:  # never emit an image without a pedestrian by accident; draw again
        return make_synthetic_image(rng, height, width, max_instances, min_visible)
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    out = out.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.0, 0.8)))
    return np.asarray(out), mask


def make_synthetic_pennfudan(root, num_images=170, seed=0, height_range=REAL_HEIGHT_RANGE,
                             width_range=REAL_WIDTH_RANGE, max_instances=4, prefix="SynthPed"):
    """Write ``num_images`` images + masks under ``root`` in the Penn-Fudan layout.

    Returns ``root``. Deterministic: the same seed and sizes give the same files. The files are
    written into a temporary folder beside ``root`` and moved in when all are there; ``root``
    must not hold a PNGImages/ or PedMasks/ folder already.
    Widths are clipped to at least 0.45x the height so a figure always fits.
    """

    rng = np.random.default_rng(seed)
    # written beside root and moved into place when complete: an interrupted run leaves nothing
    with dataset_folder_being_written(root) as tmp:
        img_dir, mask_dir = os.path.join(tmp, "PNGImages"), os.path.join(tmp, "PedMasks")
        os.makedirs(img_dir)
        os.makedirs(mask_dir)
        for i in range(1, num_images + 1):
            h = int(rng.integers(height_range[0], height_range[1] + 1))
            w = int(rng.integers(width_range[0], width_range[1] + 1))
            w = max(w, int(0.45 * h))
            image, mask = make_synthetic_image(rng, h, w, max_instances=max_instances)
            stem = f"{prefix}{i:05d}"
            Image.fromarray(image, mode="RGB").save(os.path.join(img_dir, stem + ".png"))
            Image.fromarray(mask, mode="L").save(os.path.join(mask_dir, stem + "_mask.png"))
    return root


# The COCO writer's categories, as an export tool writes them: Roboflow's supercategory with id 0
# and no annotations (left out by the reader), then three classes with ids that have a gap.
COCO_CATEGORIES = [
    dict(id=0, name="shapes", supercategory="none"),
    dict(id=1, name="pedestrian", supercategory="shapes"),
    dict(id=3, name="ball", supercategory="shapes"),
    dict(id=7, name="sign", supercategory="shapes"),
]


def _polygon_mask(polygon, height, width):
    """The polygon rasterised as pycocotools does (so the file's boxes and areas match its masks)."""

    return segmentation_mask([np.asarray(polygon, dtype=np.float64).flatten().tolist()], height, width).astype(bool)


def _box(mask):
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]


def _random_shapes(rng, height, width):
    """Random balls (16-gons), maybe a sign (a rectangle) and a crowd of small balls, as ``(category id, polygon,
    iscrowd)``."""
    shapes = []
    for _ in range(int(rng.integers(0, 3))):  # balls: 16-gons
        r = rng.uniform(0.06, 0.14) * min(height, width)
        cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
        angles = np.linspace(0, 2 * math.pi, 16, endpoint=False)
        shapes.append((3, np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1).round(1), 0))
    if rng.random() < 0.5:  # a sign: an upright rectangle
        w, h = rng.uniform(0.12, 0.25) * width, rng.uniform(0.1, 0.2) * height
        x, y = rng.uniform(0, width - w), rng.uniform(0, height * 0.5)
        shapes.append((7, np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]]).round(1), 0))
    if rng.random() < 0.15:  # a crowd: a cluster of small balls, annotated once
        cx, cy, r = rng.uniform(0.2, 0.8) * width, rng.uniform(0.6, 0.9) * height, 0.03 * min(height, width)
        for k in range(5):
            angles = np.linspace(0, 2 * math.pi, 12, endpoint=False)
            ox, oy = cx + 2.2 * r * (k - 2), cy + r * (k % 2)
            shapes.append((3, np.stack([ox + r * np.cos(angles), oy + r * np.sin(angles)], 1).round(1), 1))
    return shapes


def _draw_shapes(rng, canvas, shapes, height, width):
    """Draw ``shapes`` on ``canvas`` in order, each in a random colour; returns their masks."""
    draw = ImageDraw.Draw(canvas)
    shape_masks = []
    for _cat, polygon, _ in shapes:
        draw.polygon([tuple(p) for p in polygon], fill=_random_colour(rng))
        shape_masks.append(_polygon_mask(polygon, height, width))
    return shape_masks


def _pedestrian_objects(ped_mask, shape_masks):
    """The pedestrians as ``(category id, mask, RLE, iscrowd)``: what the shapes leave visible, if 16 pixels or more."""
    covered = np.zeros(ped_mask.shape, bool)
    for m in shape_masks:
        covered |= m
    objects = []
    for k in range(1, int(ped_mask.max()) + 1):
        visible = (ped_mask == k) & ~covered
        if visible.sum() >= 16:
            objects.append((1, visible, mask_to_rle(visible, compressed=k % 2 == 1), 0))
    return objects


def _drawn_shape_objects(shapes, shape_masks, height, width):
    """The shapes as ``(category id, mask, segmentation, iscrowd)``: a polygon where nothing drawn later covers it,
    else its visible part as RLE; the crowd's balls as one ``iscrowd`` RLE."""
    crowd = np.zeros((height, width), bool)
    covered_later = [np.zeros((height, width), bool)]  # what the shapes drawn after each one cover
    for m in reversed(shape_masks[1:]):
        covered_later.insert(0, covered_later[0] | m)
    objects = []
    for (cat, polygon, iscrowd), m, later in zip(shapes, shape_masks, covered_later):
        if iscrowd:
            crowd |= m
        elif (m & ~later).sum() >= 16:  # a polygon is only exact when nothing covers it
            if (m & later).any():
                objects.append((cat, m & ~later, mask_to_rle(m & ~later), 0))
            else:
                objects.append((cat, m, [polygon.flatten().tolist()], 0))
    if crowd.any():
        objects.append((3, crowd, mask_to_rle(crowd, compressed=False), 1))
    return objects


def _coco_annotations(objects, image_id, first_ann_id):
    """COCO annotation dicts of ``(category id, mask, segmentation, iscrowd)`` objects, ids from ``first_ann_id``."""
    return [dict(id=first_ann_id + i, image_id=image_id, category_id=cat, bbox=_box(mask), area=float(mask.sum()),
                 segmentation=segmentation, iscrowd=iscrowd)
            for i, (cat, mask, segmentation, iscrowd) in enumerate(objects)]


def make_synthetic_coco_image(rng, height, width, image_id, first_ann_id):
    """One image with pedestrians (masks as RLE), balls and signs (polygons), sometimes empty or
    with a crowd of balls (one ``iscrowd`` RLE). Returns (RGB array, annotations)."""
    empty = rng.random() < 0.12
    if empty:
        img, ped_mask = _background(rng, width, height).astype(np.uint8), np.zeros((height, width), np.uint8)
    else:
        img, ped_mask = make_synthetic_image(rng, height, width, max_instances=3)
    canvas = Image.fromarray(np.ascontiguousarray(img))
    shapes = [] if empty else _random_shapes(rng, height, width)  # drawn over the pedestrians, in order
    shape_masks = _draw_shapes(rng, canvas, shapes, height, width)
    objects = _pedestrian_objects(ped_mask, shape_masks) + _drawn_shape_objects(shapes, shape_masks, height, width)
    return np.asarray(canvas), _coco_annotations(objects, image_id, first_ann_id)


def make_synthetic_coco(root, num_train=40, num_val=12, seed=0, height_range=(96, 128), width_range=(96, 160)):
    """Write ``root/train.json`` + ``root/train/`` and ``root/val.json`` + ``root/val/`` in COCO's
    instances format (as CVAT or Roboflow export them): pedestrians, balls and signs, masks as
    polygons, compressed and uncompressed RLE, a few crowd regions and empty images.
    Deterministic from the seed. Returns the two JSON paths."""


    rng = np.random.default_rng(seed)
    with dataset_folder_being_written(root, existing=("train.json", "val.json")) as tmp:
        image_id, ann_id = 1, 1
        for split, count in (("train", num_train), ("val", num_val)):
            os.makedirs(os.path.join(tmp, split))
            images, annotations = [], []
            for _ in range(count):
                h = int(rng.integers(height_range[0], height_range[1] + 1))
                w = int(rng.integers(width_range[0], width_range[1] + 1))
                img, anns = make_synthetic_coco_image(rng, h, w, image_id, ann_id)
                name = f"{split}_{image_id:05d}.png"
                Image.fromarray(img).save(os.path.join(tmp, split, name))
                images.append(dict(id=image_id, file_name=name, width=w, height=h))
                annotations += anns
                image_id, ann_id = image_id + 1, ann_id + len(anns)
            with open(os.path.join(tmp, split + ".json"), "w") as f:
                json.dump(dict(images=images, annotations=annotations, categories=COCO_CATEGORIES), f)
    return os.path.join(root, "train.json"), os.path.join(root, "val.json")


def _trace_outlines(mask):
    """The outer outlines of a mask's 4-connected parts, as polygons on pixel corners (holes left
    out: a YOLO line is one outline). Each pixel edge between inside and outside is a directed
    step, clockwise around the inside; following the steps closes each outline."""
    m = np.pad(mask.astype(bool), 1)
    steps = {}
    ys, xs = np.nonzero(m)
    for y, x in zip(ys.tolist(), xs.tolist()):
        cx, cy = x - 1, y - 1  # corners in the unpadded image
        if not m[y - 1, x]:
            steps.setdefault((cx, cy), []).append((cx + 1, cy))
        if not m[y, x + 1]:
            steps.setdefault((cx + 1, cy), []).append((cx + 1, cy + 1))
        if not m[y + 1, x]:
            steps.setdefault((cx + 1, cy + 1), []).append((cx, cy + 1))
        if not m[y, x - 1]:
            steps.setdefault((cx, cy + 1), []).append((cx, cy))
    outlines = []
    while steps:
        start = min(steps)
        loop, here, prev = [start], start, None
        while True:
            options = steps[here]
            if len(options) > 1 and prev is not None:  # a corner two parts touch at: turn right, stay on this part
                d = (here[0] - prev[0], here[1] - prev[1])
                right = (here[0] - d[1], here[1] + d[0])
                nxt = right if right in options else options[0]
            else:
                nxt = options[0]
            options.remove(nxt)
            if not options:
                del steps[here]
            prev, here = here, nxt
            if here == start:
                break
            loop.append(here)
        pts = np.array(loop, float)
        area = 0.5 * float(np.sum(pts[:, 0] * np.roll(pts[:, 1], -1) - np.roll(pts[:, 0], -1) * pts[:, 1]))
        if area > 0:  # clockwise on screen (y down): an outer outline; holes run the other way
            keep = [i for i in range(len(loop)) if
                    (loop[i - 1][0] - loop[i][0]) * (loop[(i + 1) % len(loop)][1] - loop[i][1]) !=
                    (loop[i - 1][1] - loop[i][1]) * (loop[(i + 1) % len(loop)][0] - loop[i][0])]  # corners only
            outlines.append([loop[i] for i in keep])
    return outlines


def _coco_scenes(num_train, num_val, seed, height_range, width_range):
    """The COCO writer's scenes (same seed, same images and objects), read back from a temporary
    folder: ``{split: (image folder, COCO dict)}`` inside a context that removes it."""

    @contextlib.contextmanager
    def scenes():
        with tempfile.TemporaryDirectory() as tmp:
            make_synthetic_coco(os.path.join(tmp, "coco"), num_train, num_val, seed, height_range, width_range)
            out = {}
            for split in ("train", "val"):
                with open(os.path.join(tmp, "coco", split + ".json")) as f:
                    out[split] = (os.path.join(tmp, "coco", split), json.load(f))
            yield out
    return scenes()


def make_synthetic_labelme(root, num_train=40, num_val=12, seed=0, height_range=(96, 128), width_range=(96, 160)):
    """The COCO writer's scenes as labelme folders ``root/train`` and ``root/val``: each image with
    its JSON beside it. Polygons stay polygons (upright four-corner ones become rectangles),
    pixel masks become labelme "mask" shapes; crowd regions are left out (labelme has none).
    Returns the two folders."""


    names = {c["id"]: c["name"] for c in COCO_CATEGORIES}
    with _coco_scenes(num_train, num_val, seed, height_range, width_range) as scenes, \
            dataset_folder_being_written(root, existing=("train", "val")) as tmp:
        for split, (image_dir, data) in scenes.items():
            os.makedirs(os.path.join(tmp, split))
            by_image = {}
            for ann in data["annotations"]:
                by_image.setdefault(ann["image_id"], []).append(ann)
            for im in data["images"]:
                shutil.copy(os.path.join(image_dir, im["file_name"]), os.path.join(tmp, split, im["file_name"]))
                shapes = []
                for group, ann in enumerate(a for a in by_image.get(im["id"], []) if not a["iscrowd"]):
                    label, seg = names[ann["category_id"]], ann["segmentation"]
                    common = dict(label=label, group_id=None, description="", flags={}, mask=None)
                    if isinstance(seg, list):
                        for poly in seg:
                            pts = np.asarray(poly).reshape(-1, 2)
                            xs, ys = sorted(set(pts[:, 0])), sorted(set(pts[:, 1]))
                            if len(pts) == 4 and len(xs) == 2 and len(ys) == 2:  # an upright rectangle
                                shapes.append(dict(common, shape_type="rectangle",
                                                   points=[[xs[1], ys[1]], [xs[0], ys[0]]]))
                            else:
                                shapes.append(dict(common, shape_type="polygon", points=pts.tolist()))
                            if len(seg) > 1:
                                shapes[-1]["group_id"] = group
                    else:
                        mask = segmentation_mask(seg, im["height"], im["width"]).astype(bool)
                        ys, xs = np.nonzero(mask)
                        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
                        buf = io.BytesIO()
                        Image.fromarray(mask[y0:y1 + 1, x0:x1 + 1].astype(np.uint8) * 255).save(buf, "PNG")
                        shapes.append(dict(common, shape_type="mask", points=[[x0, y0], [x1, y1]],
                                           mask=base64.b64encode(buf.getvalue()).decode("ascii")))
                doc = dict(version="5.5.0", flags={}, shapes=shapes, imagePath=im["file_name"], imageData=None,
                           imageHeight=im["height"], imageWidth=im["width"])
                with open(os.path.join(tmp, split, os.path.splitext(im["file_name"])[0] + ".json"), "w") as f:
                    json.dump(doc, f)
    return os.path.join(root, "train"), os.path.join(root, "val")


def make_synthetic_yolo(root, num_train=40, num_val=12, seed=0, height_range=(96, 128), width_range=(96, 160)):
    """The COCO writer's scenes as a YOLO segmentation dataset: ``root/data.yaml`` (path ".",
    train/val folders, names), ``images/{train,val}/X.png`` and ``labels/{train,val}/X.txt``,
    one line per object: class id, then its outline normalised to 0..1 (pixel masks traced; a
    mask in several parts joined by zero-width bridges, as Ultralytics joins them). Crowd regions
    are left out. Returns the YAML's path."""


    parents = {c.get("supercategory") for c in COCO_CATEGORIES}
    categories = [c for c in COCO_CATEGORIES if c["name"] not in parents]  # Roboflow's unused parent: not a class
    ids = {c["id"]: k for k, c in enumerate(categories)}
    with _coco_scenes(num_train, num_val, seed, height_range, width_range) as scenes, \
            dataset_folder_being_written(root, existing=("data.yaml", "images", "labels")) as tmp:
        for split, (image_dir, data) in scenes.items():
            os.makedirs(os.path.join(tmp, "images", split))
            os.makedirs(os.path.join(tmp, "labels", split))
            by_image = {}
            for ann in data["annotations"]:
                by_image.setdefault(ann["image_id"], []).append(ann)
            for im in data["images"]:
                shutil.copy(os.path.join(image_dir, im["file_name"]),
                            os.path.join(tmp, "images", split, im["file_name"]))
                w, h = im["width"], im["height"]
                lines = []
                for ann in by_image.get(im["id"], []):
                    if ann["iscrowd"]:
                        continue
                    seg = ann["segmentation"]
                    parts = [np.asarray(p).reshape(-1, 2).tolist() for p in seg] if isinstance(seg, list) else \
                        _trace_outlines(segmentation_mask(seg, h, w))
                    outline = [tuple(p) for p in parts[0]]
                    for part in parts[1:]:  # several parts: out along a bridge to each, back the same way
                        outline += [outline[0]] + [tuple(p) for p in part] + [tuple(part[0])]
                    coords = " ".join(f"{x / w:.6f} {y / h:.6f}" for x, y in outline)
                    lines.append(f"{ids[ann['category_id']]} {coords}")
                stem = os.path.splitext(im["file_name"])[0]
                if lines:  # no label file: a negative, as YOLO reads it
                    with open(os.path.join(tmp, "labels", split, stem + ".txt"), "w") as f:
                        f.write("\n".join(lines) + "\n")
        with open(os.path.join(tmp, "data.yaml"), "w") as f:
            f.write("path: .\ntrain: images/train\nval: images/val\nnames:\n" +
                    "".join(f"  {k}: {c['name']}\n" for k, c in enumerate(categories)))
    return os.path.join(root, "data.yaml")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m finetune.data.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="output folder (gets PNGImages/ and PedMasks/)")
    parser.add_argument("--num-images", type=int, default=170, help="number of images (default: 170)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--height", type=int, nargs=2, default=REAL_HEIGHT_RANGE, metavar=("MIN", "MAX"),
                        help="image height range in px (default: 311 581, as the real dataset)")
    parser.add_argument("--width", type=int, nargs=2, default=REAL_WIDTH_RANGE, metavar=("MIN", "MAX"),
                        help="image width range in px (default: 253 1017, as the real dataset)")
    parser.add_argument("--max-instances", type=int, default=4, help="most pedestrians per image (default: 4)")
    parser.add_argument("--coco", type=int, default=None, metavar="NUM_VAL",
                        help="write COCO instances files instead (train.json + train/, val.json + val/ with NUM_VAL "
                             "images): pedestrians, balls and signs (default: None, the Penn-Fudan layout)")
    parser.add_argument("--labelme", type=int, default=None, metavar="NUM_VAL",
                        help="write the --coco scenes as labelme folders instead (train/ and val/, a JSON beside "
                             "each image) (default: None)")
    parser.add_argument("--yolo", type=int, default=None, metavar="NUM_VAL",
                        help="write the --coco scenes as a YOLO segmentation dataset instead (data.yaml, images/, "
                             "labels/) (default: None)")
    args = parser.parse_args(argv)
    if args.labelme is not None or args.yolo is not None:
        if args.labelme is not None:
            written = make_synthetic_labelme(args.root, args.num_images, args.labelme, args.seed, tuple(args.height),
                                             tuple(args.width))
        else:
            written = (make_synthetic_yolo(args.root, args.num_images, args.yolo, args.seed, tuple(args.height),
                                           tuple(args.width)),)
        print(f"Wrote {' and '.join(written)}")
        return
    if args.coco is not None:
        train, val = make_synthetic_coco(args.root, args.num_images, args.coco, args.seed, tuple(args.height),
                                         tuple(args.width))
        print(f"Wrote {train} ({args.num_images} images) and {val} ({args.coco} images)")
        return
    make_synthetic_pennfudan(args.root, args.num_images, args.seed, tuple(args.height), tuple(args.width),
                             args.max_instances)
    print(f"Wrote {args.num_images} synthetic images to {args.root}")


if __name__ == "__main__":
    main()
