"""prediction.py: --predict on images PIL refuses (a decompression bomb) or warns about (huge
photos): one line of ours each, the other images predicted, no traceback, no PIL warning."""

import os
import struct
import warnings
import zlib

import pytest
import torch
from conftest import TINY, build, run_main, tiny_argv
from PIL import Image
from test_arguments import cli

import tv_training
from finetune.errors import TutorialError
from finetune.outputs import onnx_export, prediction


def bilevel_png(path, width, height):
    """A black 1-bit PNG of ``width`` x ``height``, written row block by row block: 20000x20000
    compresses to about 50 KB and never sits in memory."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packed = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte 0, then the row's bits
    body = b"".join(packed.compress(row * min(1000, height - y)) for y in range(0, height, 1000)) + packed.flush()
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)))
        f.write(chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return str(path)


def no_pil_warning(caught, *texts):
    """Nothing of PIL's decompression-bomb warning: as a warning, or in the text printed."""
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert not any("decompression bomb DOS" in t or "DecompressionBomb" in t for t in texts)


def test_a_real_bomb_is_listed_and_refused_in_one_line_without_decoding(tmp_path):
    bomb = bilevel_png(tmp_path / "bomb.png", 20000, 20000)
    assert os.path.getsize(bomb) < 100_000
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "small.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images, skipped = prediction.list_images([str(tmp_path)])
        assert images == [bomb, str(tmp_path / "small.png")] and skipped == []  # kept, to be reported
        with pytest.raises(TutorialError) as info:
            prediction.read_photo(bomb)
        assert prediction.read_photo(str(tmp_path / "small.png")).shape == (3, 30, 40)
    said = str(info.value)
    assert said == (f"{bomb}: too many pixels (400 megapixels; PIL's limit is {2 * Image.MAX_IMAGE_PIXELS / 1e6:,.0f} "
                    f"megapixels, twice PIL.Image.MAX_IMAGE_PIXELS): not decoded, as it could be a decompression "
                    f"bomb. Shrink it (e.g. to 8000 pixels on its long side) to predict on it")
    no_pil_warning(caught)


def test_a_photo_over_pils_warning_size_is_listed_without_its_warning(tmp_path):
    huge = bilevel_png(tmp_path / "huge.png", 12000, 12000)  # 144 megapixels: PIL warns, not refuses
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert prediction.list_images([huge]) == ([huge], [])
    no_pil_warning(caught)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A finished one-epoch demo run: its output folder."""
    out = str(tmp_path_factory.mktemp("trained") / "run")
    run_main(*tiny_argv(data, out), quiet=True)
    return out


@pytest.fixture
def photos(tmp_path, monkeypatch):
    """A folder where, with PIL's limits lowered to 1000 pixels (warning) and 2000 (refused),
    ``bomb.png`` (64x64) is refused, ``large.png`` (40x40) warned about and ``a.png`` (20x20) plain."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, side in (("a.png", 20), ("bomb.png", 64), ("large.png", 40)):
        Image.new("RGB", (side, side), (90, 120, 200)).save(folder / name)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    return folder


def test_predict_skips_a_bomb_says_so_once_and_predicts_the_others(trained, photos, tmp_path, capsys):
    out = tmp_path / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, printed, err = cli(["--predict", str(photos), "--weights", os.path.join(trained, "checkpoint.pth"),
                                  "--output-dir", str(out)], capsys)
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "error: 1 of 3 image(s) could not be read or predicted (listed above)"
    assert sorted(os.listdir(out / "predict")) == ["a.png.json", "a.png.png", "images.json", "large.png.json",
                                                   "large.png.png", "results.json"]
    lines = (printed + err).splitlines()
    bomb = [line for line in lines if "bomb.png" in line]
    assert bomb == [f"error: {photos / 'bomb.png'}: too many pixels (4,096 pixels; PIL's limit is 2,000 pixels, "
                    f"twice PIL.Image.MAX_IMAGE_PIXELS): not decoded, as it could be a decompression bomb. Shrink it "
                    f"(e.g. to 8000 pixels on its long side) to predict on it"]
    large = [line for line in lines if "large.png" in line and "->" not in line]
    assert len(large) == 1 and large[0].startswith(f"{photos / 'large.png'}: 1,600 pixels (40x40), large (PIL warns "
                                                   f"above 1,000 pixels): it is resized to --max-size for the model")
    assert any(line.startswith(f"{photos / 'large.png'}: ") and "->" in line for line in lines)  # predicted
    no_pil_warning(caught, printed, err)


@pytest.fixture(scope="module")
def onnx_model(trained, tmp_path_factory):
    """The trained run exported to ONNX (before any test lowers PIL's limits)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = str(tmp_path_factory.mktemp("onnx") / "model.onnx")
    assert tv_training.cli(["--export", path, "--weights", os.path.join(trained, "checkpoint.pth")]) is not None
    return path


def test_predict_through_onnx_skips_a_bomb_alike(onnx_model, photos, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, printed, err = cli(["--predict", str(photos), "--weights", onnx_model, "--output-dir", str(out)], capsys)
    assert code == 1 and "Traceback" not in err
    assert err.strip() == "error: 1 of 3 image(s) could not be read or predicted (listed above)"
    assert sorted(os.listdir(out / "predict")) == ["a.png.json", "a.png.png", "images.json", "large.png.json",
                                                   "large.png.png", "results.json"]
    assert printed.count(f"error: {photos / 'bomb.png'}: too many pixels (4,096 pixels; ") == 1
    assert printed.count(f"{photos / 'large.png'}: 1,600 pixels (40x40), large") == 1
    no_pil_warning(caught, printed, err)


def test_the_export_check_leaves_out_a_bomb_as_predict_does(photos, capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = onnx_export.verification_images([str(photos)], {}, None, None)
    printed = capsys.readouterr().out
    assert [name for name, _ in images] == [str(photos / "a.png"), str(photos / "large.png")]
    assert f"note: {photos / 'bomb.png'}: too many pixels (4,096 pixels; " in printed
    assert printed.count("bomb.png") == 1 and printed.count("large.png") == 1
    no_pil_warning(caught, printed)


def test_a_score_threshold_under_the_models_own_keeps_the_detections_between(tmp_path):
    """torchvision's detectors drop scores under 0.05 (box_score_thresh) before --score-threshold
    sees them: asked for 0.001, --predict lowers that for its run, then puts torchvision's back."""
    torch.manual_seed(0)
    model = build("maskrcnn_resnet18", num_classes=2, **TINY)
    with torch.no_grad():  # the foreground class's scores pushed to ~0.01, under torchvision's 0.05
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([4.5, 0.0]))
    Image.new("RGB", (96, 80), (90, 120, 200)).save(tmp_path / "a.png")
    assert prediction.model_min_score(model) == pytest.approx(0.05)

    def scores(threshold, name):
        result = prediction.predict(model, [str(tmp_path / "a.png")], torch.device("cpu"), str(tmp_path / name),
                                    threshold)
        return [d["score"] for d in result["predictions"][0]["detections"]]

    assert scores(0.05, "at_005") == []
    low = scores(0.001, "at_0001")
    assert low and all(0.001 <= s < 0.05 for s in low)
    assert model.roi_heads.score_thresh == pytest.approx(0.05)  # torchvision's setting is back


def test_an_onnx_model_says_the_lowest_score_it_was_exported_with(onnx_model, tmp_path, capsys):
    Image.new("RGB", (40, 30), (90, 120, 200)).save(tmp_path / "a.png")
    capsys.readouterr()
    code, printed, _ = cli(["--predict", str(tmp_path / "a.png"), "--weights", onnx_model, "--output-dir",
                            str(tmp_path / "out"), "--score-threshold", "0.01"], capsys)
    assert code == 0
    assert (f"note: {onnx_model} keeps detections scoring at least 0.05 (fixed when it was exported); "
            f"--score-threshold 0.01 finds none below that. A checkpoint (--weights CHECKPOINT) goes lower.") in printed
    code, printed, _ = cli(["--predict", str(tmp_path / "a.png"), "--weights", onnx_model, "--output-dir",
                            str(tmp_path / "out2")], capsys)
    assert code == 0 and "keeps detections scoring" not in printed  # the default 0.5 is above it
