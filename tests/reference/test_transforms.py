"""Tests for transforms.py: geometry stays consistent between image, boxes and masks.

Box convention used here: boxes built from masks are *pixel-edge* boxes, i.e.
``masks_to_boxes(masks) + [0, 0, 1, 1]`` (x2 is the right edge of the last pixel,
not its index). With these, flips, crops and pads map boxes exactly onto the
transformed masks, and resizes to within 1 px.
"""


import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes

import transforms as T

H, W = 20, 30
# (top, bottom, left, right) of each rectangular object, end-exclusive.
RECTS = [(2, 10, 3, 12), (8, 18, 15, 27), (12, 19, 5, 10)]


def edge_boxes(masks):
    """Pixel-edge boxes of (N, H, W) masks."""
    return masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])


def make_masks(rects=RECTS, height=H, width=W):
    masks = torch.zeros(len(rects), height, width, dtype=torch.uint8)
    for i, (top, bottom, left, right) in enumerate(rects):
        masks[i, top:bottom, left:right] = 1
    return masks


def make_sample(tv=True, dtype=torch.float32, rects=RECTS, label=1, height=H, width=W):
    torch.manual_seed(1234)
    image = torch.rand(3, height, width)
    if dtype == torch.uint8:
        image = (image * 255).to(torch.uint8)
    masks = make_masks(rects, height, width)
    boxes = edge_boxes(masks)
    target = {
        "boxes": boxes,
        "labels": torch.full((len(rects),), label, dtype=torch.int64),
        "masks": masks,
        "area": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
        "iscrowd": torch.zeros(len(rects), dtype=torch.int64),
        "image_id": 7,
    }
    if tv:
        image = tv_tensors.Image(image)
        target["boxes"] = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width))
        target["masks"] = tv_tensors.Mask(masks)
    return image, target


def assert_consistent(image, target, mask_tol=1.0):
    """Counts agree, boxes lie inside the image and match their masks' extents."""
    height, width = image.shape[-2:]
    n = len(target["labels"])
    for key in ("boxes", "masks", "area", "iscrowd"):
        assert len(target[key]) == n, key
    masks, boxes = target["masks"], target["boxes"]
    assert tuple(masks.shape[-2:]) == (height, width)
    if isinstance(boxes, tv_tensors.BoundingBoxes):
        assert tuple(boxes.canvas_size) == (height, width)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= width).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= height).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    for box, mask in zip(boxes, masks):
        assert mask.any(), "kept instance lost its mask"
        extent = edge_boxes(mask[None])[0]
        assert (box.as_subclass(torch.Tensor) - extent).abs().max() <= mask_tol, (box, extent)


# --------------------------------------------------------------------------- flip


def test_flip_p1_moves_image_boxes_and_masks():
    image, target = make_sample(tv=False)
    original = {k: v.clone() if torch.is_tensor(v) else v for k, v in target.items()}
    out_image, out = T.RandomHorizontalFlip(p=1.0)(image, target)

    assert torch.equal(out_image, image.flip(-1))
    assert torch.equal(out["masks"], target["masks"].flip(-1))
    # pixel-edge boxes map exactly onto the flipped masks
    assert torch.equal(out["boxes"], edge_boxes(out["masks"]))
    assert torch.equal(out["labels"], target["labels"]) and out["image_id"] == 7
    # the input target is not modified
    for key, value in original.items():
        assert torch.equal(target[key], value) if torch.is_tensor(value) else target[key] == value

    back_image, back = T.RandomHorizontalFlip(p=1.0)(out_image, out)
    assert torch.equal(back_image, image)
    assert torch.equal(back["boxes"], target["boxes"]) and torch.equal(back["masks"], target["masks"])


def test_flip_of_masks_to_boxes_boxes_is_one_pixel_right():
    # With masks_to_boxes boxes (x2 = index of the last pixel), W - x2 is one pixel to
    # the right of the flipped mask's first column, as in the reference implementation.
    masks = make_masks()
    boxes = masks_to_boxes(masks)
    _, out = T.RandomHorizontalFlip(p=1.0)(torch.zeros(3, H, W), {"boxes": boxes, "masks": masks})
    assert torch.equal(out["boxes"], masks_to_boxes(out["masks"]) + torch.tensor([1.0, 0.0, 1.0, 0.0]))


def test_flip_p0_is_identity():
    image, target = make_sample()
    out_image, out = T.RandomHorizontalFlip(p=0.0)(image, target)
    assert torch.equal(out_image, image)
    assert all(torch.equal(out[k], target[k]) for k in ("boxes", "masks", "labels"))


def test_flip_pil_image():
    image = Image.new("RGB", (W, H))
    image.putpixel((0, 0), (255, 0, 0))
    boxes = torch.tensor([[0.0, 0.0, 5.0, 4.0]])
    out_image, out = T.RandomHorizontalFlip(p=1.0)(image, {"boxes": boxes})
    assert isinstance(out_image, Image.Image) and out_image.size == (W, H)
    assert out_image.getpixel((W - 1, 0)) == (255, 0, 0)
    assert torch.equal(out["boxes"], torch.tensor([[W - 5.0, 0.0, W - 0.0, 4.0]]))


def test_flip_keeps_tv_tensor_types():
    image, target = make_sample(tv=True)
    out_image, out = T.RandomHorizontalFlip(p=1.0)(image, target)
    assert isinstance(out_image, tv_tensors.Image)
    assert isinstance(out["boxes"], tv_tensors.BoundingBoxes)
    assert tuple(out["boxes"].canvas_size) == (H, W)
    assert isinstance(out["masks"], tv_tensors.Mask)
    assert_consistent(out_image, out, mask_tol=0)


def test_keypoint_flip_swaps_sides_and_mirrors_x():
    kps = torch.zeros(1, 17, 3)
    kps[0, :, 0] = torch.arange(17, dtype=torch.float32) + 1  # x
    kps[0, :, 1] = 5.0
    kps[0, :, 2] = 2.0
    kps[0, 16] = 0.0  # right ankle not labelled: COCO stores (0, 0, 0)

    flipped = T._flip_coco_person_keypoints(kps, W)
    # left eye (1) and right eye (2) trade places, x mirrored
    assert flipped[0, 1, 0] == W - kps[0, 2, 0] and flipped[0, 2, 0] == W - kps[0, 1, 0]
    assert flipped[0, 0, 0] == W - kps[0, 0, 0]  # nose stays the nose
    # the unlabelled right ankle becomes the (unlabelled) left ankle
    assert torch.equal(flipped[0, 15], torch.zeros(3))
    assert torch.equal(flipped[..., 1:], kps[:, T._COCO_PERSON_FLIP_ORDER, 1:])

    _, out = T.RandomHorizontalFlip(p=1.0)(torch.zeros(3, H, W), {"boxes": torch.zeros(1, 4), "keypoints": kps})
    assert torch.equal(out["keypoints"], flipped)
    _, back = T.RandomHorizontalFlip(p=1.0)(torch.zeros(3, H, W), out)
    assert torch.equal(back["keypoints"], kps)


# --------------------------------------------------------------------------- conversions


def pil_image():
    array = (torch.arange(H * W * 3) % 256).to(torch.uint8).reshape(H, W, 3).numpy()
    return Image.fromarray(array)


def test_pil_to_tensor_then_to_dtype_scales_to_unit_range():
    target = {"labels": torch.tensor([1])}
    image, out = T.PILToTensor()(pil_image(), target)
    assert image.dtype == torch.uint8 and image.shape == (3, H, W) and image.max() == 255
    assert out is target
    scaled, _ = T.ToDtype(torch.float, scale=True)(image, target)
    assert scaled.dtype == torch.float32 and scaled.min() >= 0 and scaled.max() == 1.0
    assert torch.allclose(scaled * 255, image.float())
    unscaled, _ = T.ToDtype(torch.float)(image, target)
    assert unscaled.max() == 255.0


def test_to_tensor_matches_pil_to_tensor_and_to_dtype():
    image, _ = T.ToTensor()(pil_image(), None)
    expected, _ = T.Compose([T.PILToTensor(), T.ToDtype(torch.float, scale=True)])(pil_image())
    assert image.dtype == torch.float32 and torch.allclose(image, expected)


def test_compose_applies_in_order():
    calls = []

    def step(name):
        def apply(image, target):
            calls.append(name)
            return image + [name], target

        return apply

    image, target = T.Compose([step("a"), step("b"), step("c")])([], {"x": 1})
    assert calls == ["a", "b", "c"] and image == ["a", "b", "c"] and target == {"x": 1}


# --------------------------------------------------------------------------- geometric transforms


@pytest.mark.parametrize("seed", range(8))
def test_random_iou_crop(seed):
    image, target = make_sample()
    torch.manual_seed(seed)
    out_image, out = T.RandomIoUCrop()(image, target)
    height, width = out_image.shape[-2:]
    assert height <= H and width <= W and isinstance(out_image, tv_tensors.Image)
    assert len(out["labels"]) >= 1
    assert_consistent(out_image, out, mask_tol=0)


def test_random_iou_crop_crops_and_is_deterministic():
    image, target = make_sample()
    sizes = []
    for seed in range(8):
        torch.manual_seed(seed)
        out_image, out = T.RandomIoUCrop()(image, target)
        torch.manual_seed(seed)
        again_image, again = T.RandomIoUCrop()(image, target)
        assert torch.equal(out_image, again_image) and torch.equal(out["boxes"], again["boxes"])
        sizes.append(tuple(out_image.shape[-2:]))
    assert any(size != (H, W) for size in sizes)
    with pytest.raises(ValueError):
        T.RandomIoUCrop()(image, None)


@pytest.mark.parametrize("seed", range(5))
def test_random_zoom_out(seed):
    image, target = make_sample()
    torch.manual_seed(seed)
    out_image, out = T.RandomZoomOut(fill=[0.25, 0.5, 0.75], p=1.0)(image, target)
    height, width = out_image.shape[-2:]
    assert H <= height <= 4 * H and W <= width <= 4 * W
    assert_consistent(out_image, out, mask_tol=0)

    # the original sits at the offset the boxes moved by; the rest is the fill colour
    left, top = (out["boxes"][0, :2] - target["boxes"][0, :2]).int().tolist()
    assert torch.equal(out_image[:, top : top + H, left : left + W], image)
    border = torch.ones(height, width, dtype=torch.bool)
    border[top : top + H, left : left + W] = False
    assert torch.equal(out_image[:, border], torch.tensor([[0.25], [0.5], [0.75]]).expand(3, int(border.sum())))


def test_random_zoom_out_p0_and_pil():
    image, target = make_sample()
    assert T.RandomZoomOut(p=0.0)(image, target)[0] is image
    torch.manual_seed(0)
    out_image, _ = T.RandomZoomOut(fill=[10, 20, 30], side_range=(2.0, 2.0), p=1.0)(pil_image(), None)
    assert isinstance(out_image, Image.Image) and out_image.size == (2 * W, 2 * H)


@pytest.mark.parametrize("seed", range(5))
def test_scale_jitter(seed):
    image, target = make_sample()
    torch.manual_seed(seed)
    out_image, out = T.ScaleJitter(target_size=(H, W), scale_range=(0.5, 2.0))(image, target)
    height, width = out_image.shape[-2:]
    assert H // 2 <= height <= 2 * H and W // 2 <= width <= 2 * W
    assert abs(width / height - W / H) < 0.1  # aspect ratio kept
    assert len(out["labels"]) == 3
    assert_consistent(out_image, out)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("size", [(15, 40), (10, 12), (25, 35)])
def test_fixed_size_crop(seed, size):
    image, target = make_sample()
    torch.manual_seed(seed)
    out_image, out = T.FixedSizeCrop(size, fill=0)(image, target)
    assert tuple(out_image.shape[-2:]) == size
    assert len(out["labels"]) <= 3
    assert_consistent(out_image, out, mask_tol=0)
    # padding goes to the bottom/right and holds the fill value
    crop_h, crop_w = min(H, size[0]), min(W, size[1])
    assert (out_image[:, crop_h:, :] == 0).all() and (out_image[:, :, crop_w:] == 0).all()


def test_fixed_size_crop_drops_objects_outside_the_crop():
    # a 5x5 crop can hold at most a part of the objects; across seeds some are dropped
    image, target = make_sample()
    counts = set()
    for seed in range(20):
        torch.manual_seed(seed)
        out_image, out = T.FixedSizeCrop(5)(image, target)
        assert_consistent(out_image, out, mask_tol=0)
        counts.add(len(out["labels"]))
    assert min(counts) < 3


@pytest.mark.parametrize("seed", range(4))
def test_random_shortest_size(seed):
    image, target = make_sample()
    torch.manual_seed(seed)
    out_image, out = T.RandomShortestSize(min_size=[10, 16], max_size=40)(image, target)
    assert tuple(out_image.shape[-2:]) in {(10, 15), (16, 24)}
    assert_consistent(out_image, out)
    # max_size caps the long side: 20x30 -> short side 40 would make the long side 60 > 45
    out_image, out = T.RandomShortestSize(min_size=40, max_size=45)(image, target)
    assert tuple(out_image.shape[-2:]) == (30, 45)
    assert_consistent(out_image, out)


def test_random_photometric_distort_keeps_shape_dtype_and_range():
    distort = T.RandomPhotometricDistort(p=1.0)
    for dtype in (torch.float32, torch.uint8):
        image, target = make_sample(dtype=dtype)
        torch.manual_seed(0)
        out_image, out = distort(image, target)
        assert out_image.shape == image.shape and out_image.dtype == dtype
        assert isinstance(out_image, tv_tensors.Image) and out is target
        assert not torch.equal(out_image, image)
        if dtype == torch.float32:
            assert out_image.min() >= 0 and out_image.max() <= 1
    out_pil, _ = distort(pil_image(), None)
    assert isinstance(out_pil, Image.Image) and out_pil.size == (W, H) and out_pil.mode == "RGB"


# --------------------------------------------------------------------------- copy-paste

# objects of the second image: one overlaps the first image's object 0 entirely
PASTE_RECTS = [(1, 11, 2, 13), (14, 20, 20, 29)]


def copy_paste_batch(tv=True, second_rects=PASTE_RECTS, second_size=(H, W)):
    image0, target0 = make_sample(tv=tv, label=1)
    image1, target1 = make_sample(tv=tv, label=2, rects=second_rects, height=second_size[0], width=second_size[1])
    return [image0, image1 * 0.5], [target0, target1]


def check_copy_paste_output(images, targets, out_images, out_targets):
    for i, (out_image, out) in enumerate(zip(out_images, out_targets)):
        dest, source = targets[i], targets[i - 1]
        assert out_image.shape == images[i].shape
        assert_consistent(out_image, out)
        # boxes are the masks' extents (masks_to_boxes convention) and no mask is empty
        assert torch.equal(out["boxes"], masks_to_boxes(out["masks"]))
        assert out["masks"].flatten(1).any(1).all()
        assert torch.equal(out["area"], out["masks"].flatten(1).sum(1).float())

        pasted = out["labels"] == source["labels"][0]
        kept = out["labels"] == dest["labels"][0]
        assert int(pasted.sum()) >= 1 and int(pasted.sum() + kept.sum()) == len(out["labels"])
        # destination objects come first, pasted ones after them
        assert not kept[int(kept.sum()) :].any()
        covered = (out["masks"][pasted] != 0).any(0)
        survivors = [m.masked_fill(covered, 0) for m in dest["masks"]]
        assert torch.equal(out["masks"][kept], torch.stack([m for m in survivors if m.any()]).as_subclass(torch.Tensor))


@pytest.mark.parametrize("seed", range(6))
def test_simple_copy_paste(seed):
    images, targets = copy_paste_batch()
    torch.manual_seed(seed)
    out_images, out_targets = T.SimpleCopyPaste()(images, targets)
    assert isinstance(out_images[0], tv_tensors.Image) and isinstance(out_targets[0]["masks"], tv_tensors.Mask)
    check_copy_paste_output(images, targets, out_images, out_targets)
    for i, out in enumerate(out_targets):
        # pasted masks are copies of the source's masks
        source_masks = [m.as_subclass(torch.Tensor) for m in targets[i - 1]["masks"]]
        for mask in out["masks"][out["labels"] == targets[i - 1]["labels"][0]]:
            assert any(torch.equal(mask.as_subclass(torch.Tensor), s) for s in source_masks)


def test_simple_copy_paste_without_blending_copies_pixels():
    images, targets = copy_paste_batch(tv=False)
    torch.manual_seed(0)
    out_images, out_targets = T.SimpleCopyPaste(blending=False)(images, targets)
    check_copy_paste_output(images, targets, out_images, out_targets)
    for i, (out_image, out) in enumerate(zip(out_images, out_targets)):
        covered = (out["masks"][out["labels"] == targets[i - 1]["labels"][0]] != 0).any(0)
        assert torch.equal(out_image[:, covered], images[i - 1][:, covered])
        assert torch.equal(out_image[:, ~covered], images[i][:, ~covered])


def test_simple_copy_paste_resizes_source_and_handles_uint8():
    images, targets = copy_paste_batch(tv=False, second_rects=[(1, 6, 1, 7), (5, 10, 8, 14)], second_size=(10, 15))
    images = [(image * 255).to(torch.uint8) for image in images]
    torch.manual_seed(3)
    out_images, out_targets = T.SimpleCopyPaste()(images, targets)
    assert [tuple(im.shape) for im in out_images] == [(3, H, W), (3, 10, 15)]
    assert all(im.dtype == torch.uint8 for im in out_images)
    for out_image, out in zip(out_images, out_targets):
        assert_consistent(out_image, out)
        assert torch.equal(out["boxes"], masks_to_boxes(out["masks"]))


def test_simple_copy_paste_requires_masks():
    images, targets = copy_paste_batch()
    del targets[0]["masks"]
    with pytest.raises(ValueError):
        T.SimpleCopyPaste()(images, targets)
