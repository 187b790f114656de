"""PennFudanDataset's contract and its checks of bad input, on tiny synthetic data."""

import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from conftest import ROOT_DIR, build
from PIL import Image
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes

import tv_training
import utils
from engine import train_one_epoch
from finetune.data import pennfudan
from finetune.data.image_files import read_rgb
from finetune.data.pennfudan import check_dataset
from finetune.data.synthetic import make_synthetic_pennfudan
from finetune.errors import DatasetError
from tv_training import PennFudanDataset, get_transform


def make_root(path, n=4, seed=0):
    return make_synthetic_pennfudan(str(path), num_images=n, seed=seed, height_range=(64, 80), width_range=(48, 96))


def write_pair(root, stem, image, mask, image_mode=None, mask_mode="L"):
    os.makedirs(os.path.join(root, "PNGImages"), exist_ok=True)
    os.makedirs(os.path.join(root, "PedMasks"), exist_ok=True)
    Image.fromarray(image, mode=image_mode).save(os.path.join(root, "PNGImages", stem + ".png"))
    m = Image.fromarray(mask, mode="L")
    if mask_mode == "P":
        m = Image.fromarray(mask, mode="P")
        m.putpalette([(i * 53) % 256 for i in range(768)])
    m.save(os.path.join(root, "PedMasks", stem + "_mask.png"))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_root(tmp_path_factory.mktemp("ped"))


def test_synthetic_data_is_deterministic_and_in_penn_fudan_layout(tmp_path):
    a, b = make_root(tmp_path / "a", n=3, seed=5), make_root(tmp_path / "b", n=3, seed=5)
    names = sorted(os.listdir(os.path.join(a, "PNGImages")))
    assert names == ["SynthPed00001.png", "SynthPed00002.png", "SynthPed00003.png"]
    assert sorted(os.listdir(os.path.join(a, "PedMasks"))) == [n[:-4] + "_mask.png" for n in names]
    for sub in ("PNGImages/SynthPed00002.png", "PedMasks/SynthPed00002_mask.png"):
        assert np.array_equal(np.asarray(Image.open(os.path.join(a, sub))),
                              np.asarray(Image.open(os.path.join(b, sub))))
    mask = Image.open(os.path.join(a, "PedMasks", "SynthPed00001_mask.png"))
    assert mask.mode == "L"
    ids = np.unique(np.asarray(mask))
    assert ids[0] == 0 and 1 <= len(ids) - 1 <= 4
    assert list(ids[1:]) == list(range(1, len(ids)))  # value k = k-th pedestrian, contiguous
    assert Image.open(os.path.join(a, "PNGImages", "SynthPed00001.png")).mode == "RGB"


def test_dataset_contract(root):
    ds = PennFudanDataset(root, transforms=None)
    assert len(ds) == 4
    for idx in range(len(ds)):
        img, target = ds[idx]
        assert isinstance(img, tv_tensors.Image) and img.dtype == torch.uint8 and img.shape[0] == 3
        assert set(target) == {"boxes", "masks", "labels", "image_id", "area", "iscrowd"}
        n = len(target["labels"])
        assert n >= 1
        assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
        assert target["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY
        assert tuple(target["boxes"].canvas_size) == tuple(img.shape[-2:])
        assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (n, 4)
        assert isinstance(target["masks"], tv_tensors.Mask) and target["masks"].dtype == torch.uint8
        assert target["masks"].shape == (n, *img.shape[-2:])
        assert target["labels"].dtype == torch.int64 and bool((target["labels"] == 1).all())
        assert target["image_id"] == idx
        assert target["iscrowd"].dtype == torch.int64 and not target["iscrowd"].any()
        # boxes are exactly the mask extents; area follows the boxes
        assert torch.equal(target["boxes"].as_subclass(torch.Tensor), masks_to_boxes(target["masks"]))
        b = target["boxes"]
        assert torch.allclose(target["area"], (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
        # one mask per distinct non-zero id of the mask file
        raw = np.asarray(Image.open(os.path.join(root, "PedMasks", ds.masks[idx])))
        assert n == len(np.unique(raw)) - 1
        assert ds.get_height_and_width(idx) == tuple(img.shape[-2:])


def test_train_transform_gives_float_image_and_consistent_flip(root):
    torch.manual_seed(0)
    ds = PennFudanDataset(root, get_transform(train=True))
    flipped_seen = False
    raw = PennFudanDataset(root, None)
    for _ in range(8):
        img, target = ds[0]
        assert img.dtype == torch.float32 and 0.0 <= float(img.min()) and float(img.max()) <= 1.0
        assert type(img) is torch.Tensor  # ToPureTensor
        ref_masks = raw[0][1]["masks"]
        if not torch.equal(target["masks"], ref_masks):
            flipped_seen = True
            assert torch.equal(target["masks"], ref_masks.flip(-1))
            width = img.shape[-1]
            ref_boxes = raw[0][1]["boxes"]
            assert torch.equal(target["boxes"][:, 0], width - ref_boxes[:, 2])
            assert torch.equal(target["boxes"][:, 2], width - ref_boxes[:, 0])
    assert flipped_seen


# --- bad input: a clear error naming the file, or correct handling -------------------------

def test_missing_root_and_folders(tmp_path):
    with pytest.raises(DatasetError, match="data folder not found"):
        check_dataset(str(tmp_path / "nowhere"))
    os.makedirs(tmp_path / "r" / "PNGImages")
    with pytest.raises(DatasetError, match="PedMasks: folder missing"):
        check_dataset(str(tmp_path / "r"))
    os.makedirs(tmp_path / "r" / "PedMasks")
    with pytest.raises(DatasetError, match="no .png images"):
        check_dataset(str(tmp_path / "r"))


def test_image_without_mask_and_mask_without_image(tmp_path):
    root = make_root(tmp_path / "a", n=3)
    os.remove(os.path.join(root, "PedMasks", "SynthPed00002_mask.png"))
    with pytest.raises(DatasetError, match=r"SynthPed00002\.png: no mask .*SynthPed00002_mask\.png"):
        check_dataset(root)

    root = make_root(tmp_path / "b", n=3)
    os.remove(os.path.join(root, "PNGImages", "SynthPed00003.png"))
    with pytest.raises(DatasetError, match=r"SynthPed00003_mask\.png: no image"):
        check_dataset(root)

    root = make_root(tmp_path / "c", n=2)
    os.rename(os.path.join(root, "PedMasks", "SynthPed00001_mask.png"), os.path.join(root, "PedMasks", "other.png"))
    with pytest.raises(DatasetError, match="SynthPed00001.png: no mask"):
        check_dataset(root)


def test_pairs_by_name_not_by_sorted_position(tmp_path):
    # the tutorial zips two sorted lists: names whose stems prefix each other sort differently with
    # "_mask" (a.png < a1.png, but a1_mask.png < a_mask.png), which would swap their masks
    root = str(tmp_path)
    rng = np.random.default_rng(1)
    for name, box in (("a", (2, 2, 10, 20)), ("a1", (12, 4, 30, 36))):
        write_pair(root, name, rng.integers(0, 255, (40, 40, 3), dtype=np.uint8), _figure_mask(40, 40, [(1, box)]))
    check_dataset(root)
    ds = PennFudanDataset(root, None)
    assert ds.imgs == ["a.png", "a1.png"] and ds.masks == ["a_mask.png", "a1_mask.png"]
    assert ds[0][1]["boxes"].tolist() == [[2.0, 2.0, 9.0, 19.0]] and ds[1][1]["boxes"].tolist() == [[12.0, 4, 29, 35]]


@pytest.mark.parametrize("what", ["truncated image", "not a png", "truncated mask"])
def test_undecodable_files_are_named(tmp_path, what):
    root = make_root(tmp_path, n=2)
    sub = "PedMasks/SynthPed00002_mask.png" if "mask" in what else "PNGImages/SynthPed00002.png"
    path = os.path.join(root, sub)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(b"this is not an image" if what == "not a png" else data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"SynthPed00002(_mask)?\.png: cannot decode"):
        check_dataset(root)


def test_mask_size_must_match_image(tmp_path):
    root = make_root(tmp_path, n=2)
    path = os.path.join(root, "PedMasks", "SynthPed00001_mask.png")
    Image.open(path).resize((20, 30)).save(path)
    with pytest.raises(DatasetError, match=r"SynthPed00001_mask\.png: mask is 20x30 but its image is"):
        check_dataset(root)


def test_rgb_mask_is_rejected(tmp_path):
    root = make_root(tmp_path, n=1)
    path = os.path.join(root, "PedMasks", "SynthPed00001_mask.png")
    Image.open(path).convert("RGB").save(path)
    with pytest.raises(DatasetError, match=r"mask has 3 channels \(RGB\)"):
        check_dataset(root)


def _figure_mask(h, w, boxes_with_ids):
    mask = np.zeros((h, w), np.uint8)
    for value, (x1, y1, x2, y2) in boxes_with_ids:
        mask[y1:y2, x1:x2] = value
    return mask


def test_image_modes_mask_modes_and_ids(tmp_path):
    root = str(tmp_path)
    rng = np.random.default_rng(0)
    h, w = 48, 40
    rgb = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    mask = _figure_mask(h, w, [(3, (2, 4, 12, 40)), (7, (20, 5, 30, 44))])  # non-contiguous ids 3 and 7
    write_pair(root, "a_rgba", np.dstack([rgb, np.full((h, w), 200, np.uint8)]), mask, "RGBA", "L")
    write_pair(root, "b_gray", rgb[..., 0], mask, "L", "P")
    pal = Image.fromarray(rgb[..., 1] // 32, mode="P")
    pal.putpalette([(i * 7) % 256 for i in range(768)])
    write_pair(root, "c_pal", rgb, mask, "RGB", "P")
    pal.save(os.path.join(root, "PNGImages", "c_pal.png"))
    write_pair(root, "d_negative", rgb, np.zeros((h, w), np.uint8))

    summary = check_dataset(root)
    assert summary == dict(images=4, instances=6, negative_images=1, widened_boxes=0)
    ds = PennFudanDataset(root, get_transform(train=False))
    raw = PennFudanDataset(root, None)
    for idx in range(4):  # the copyable class decodes as the package's checked readers do
        img_path = os.path.join(root, "PNGImages", raw.imgs[idx])
        mask_path = os.path.join(root, "PedMasks", raw.masks[idx])
        masks, boxes, _ = pennfudan.instance_masks_and_boxes(pennfudan.read_instance_mask(mask_path))
        image, target = raw[idx]
        assert torch.equal(image.as_subclass(torch.Tensor), read_rgb(img_path))
        assert torch.equal(target["masks"].as_subclass(torch.Tensor), masks)
        assert torch.equal(target["boxes"].as_subclass(torch.Tensor), boxes)
    for idx in range(3):
        img, target = ds[idx]
        assert img.shape == (3, h, w)
        assert torch.equal(target["boxes"], torch.tensor([[2.0, 4, 11, 39], [20, 5, 29, 43]]))
    img, target = ds[3]
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, h, w) and len(target["labels"]) == 0


def test_degenerate_instances_get_valid_boxes(tmp_path, capsys):
    root = str(tmp_path)
    h, w = 40, 40
    mask = _figure_mask(h, w, [(1, (5, 5, 6, 6)), (2, (10, 2, 30, 3)), (3, (35, 10, 36, 30)), (4, (12, 12, 30, 38))])
    write_pair(root, "tiny", np.full((h, w, 3), 128, np.uint8), mask)
    summary = check_dataset(root)
    assert summary["widened_boxes"] == 3
    assert "tiny_mask.png: 3 instance(s) one pixel wide or tall" in capsys.readouterr().out
    _, target = PennFudanDataset(root, None)[0]
    boxes = target["boxes"]
    assert bool((boxes[:, 2] > boxes[:, 0]).all()) and bool((boxes[:, 3] > boxes[:, 1]).all())
    assert boxes[0].tolist() == [5.0, 5.0, 6.0, 6.0]  # the one-pixel instance: a 1x1 box, kept


def test_odd_dataset_trains_without_crash_or_nan(tmp_path):
    """Palette/gray/RGBA images, palette masks, a negative image and 1-px instances all train."""

    root = str(tmp_path)
    rng = np.random.default_rng(1)
    h, w = 64, 48
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    write_pair(root, "a", base, _figure_mask(h, w, [(2, (5, 5, 20, 60)), (9, (25, 10, 26, 50))]), None, "P")
    write_pair(root, "b", base[..., 0], _figure_mask(h, w, [(1, (30, 30, 31, 31))]), "L")
    write_pair(root, "c", np.dstack([base, base[..., :1]]), np.zeros((h, w), np.uint8), "RGBA")
    write_pair(root, "d", base, _figure_mask(h, w, [(1, (3, 3, 40, 60))]))
    check_dataset(root)
    ds = PennFudanDataset(root, get_transform(train=True))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=utils.collate_fn)
    torch.manual_seed(0)
    model = build("maskrcnn", None, min_size=64, max_size=96, box_batch_size_per_image=32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    logger = train_one_epoch(model, opt, loader, "cpu", 0, print_freq=10)
    assert np.isfinite(logger.meters["loss"].global_avg)


# --- the command line: one line naming the problem, no traceback ---------------------------

def run_cli(*argv):
    return subprocess.run([sys.executable, os.path.join(ROOT_DIR, "tv_training.py"), *argv],
                          capture_output=True, text=True, cwd=ROOT_DIR, timeout=120)


def test_cli_reports_bad_data_in_one_line(tmp_path):
    root = make_root(tmp_path, n=3)
    os.remove(os.path.join(root, "PedMasks", "SynthPed00003_mask.png"))
    proc = run_cli("--data-path", root, "--weights", "none", "--output-dir", "")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "SynthPed00003.png: no mask" in lines[0] and "Add the mask or remove the image" in lines[0]


def test_offline_download_message(tmp_path, monkeypatch):
    """No network: one message with the URL, where to put the zip, and --demo; nothing half-written."""
    target = str(tmp_path / "data" / "PennFudanPed")

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr("torchvision.datasets.utils.download_url", offline)
    args = tv_training.get_args_parser().parse_args(["--data-path", target, "--weights", "none", "--output-dir", ""])
    with pytest.raises(DatasetError) as info:
        tv_training.main(args)
    message = str(info.value)
    assert pennfudan.DATA_URL in message
    assert os.path.join(str(tmp_path / "data"), "PennFudanPed.zip") in message
    assert "--demo" in message
    assert not os.path.exists(os.path.join(str(tmp_path / "data"), "PennFudanPed.zip"))


def test_download_extracts_and_verifies_the_archive(tmp_path, monkeypatch):
    """The real download path, fed a local zip in the dataset's layout; a corrupt zip is named."""

    src = make_root(tmp_path / "src" / "PennFudanPed", n=2)
    zip_src = str(tmp_path / "src.zip")
    with zipfile.ZipFile(zip_src, "w") as zf:
        for sub in ("PNGImages", "PedMasks"):
            for name in os.listdir(os.path.join(src, sub)):
                zf.write(os.path.join(src, sub, name), f"PennFudanPed/{sub}/{name}")

    def fake_download(url, root, filename):
        assert url == pennfudan.DATA_URL
        with open(zip_src, "rb") as f, open(os.path.join(root, filename), "wb") as out:
            out.write(f.read())

    monkeypatch.setattr("torchvision.datasets.utils.download_url", fake_download)
    target = str(tmp_path / "data" / "PennFudanPed")
    pennfudan.download_pennfudan(target)
    assert sorted(os.listdir(os.path.join(target, "PNGImages"))) == ["SynthPed00001.png", "SynthPed00002.png"]
    assert len(PennFudanDataset(target, None)) == 2

    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    data = open(zip_src, "rb").read()
    (bad_dir / "PennFudanPed.zip").write_bytes(data[:100] + bytes(len(data) - 100))
    with pytest.raises(DatasetError, match=r"PennFudanPed\.zip: corrupt or unexpected archive"):
        pennfudan.download_pennfudan(str(bad_dir / "PennFudanPed"))
