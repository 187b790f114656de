"""report.py: the confusion matrix and TIDE-style error breakdown on hand-made detections with
known answers (boxes, and masks by segm IoU), and the report a tiny run and --test-only write
(HTML parsed, every image there)."""

import html.parser
import json
import os
import shlex
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import torch
from conftest import run_main, tiny_argv
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from test_arguments import cli

import tv_training
from coco_eval import CocoEvaluator
from finetune.data import synthetic
from finetune.data.coco import CocoFormatDataset
from finetune.data.formats import DataSplit, load_datasets
from finetune.data.masks import mask_to_rle
from finetune.outputs import analysis, gallery, plots, report
from finetune.run import interrupts, run_folder

A, B = [10, 10, 50, 90], [60, 10, 100, 90]  # two objects, side by side (xyxy)


def scene(gt, dets, crowd=()):
    """One image: ``gt`` [(box, label)], ``dets`` [(box, label, score)], ``crowd`` [(box, label)]."""
    gt_all = list(gt) + list(crowd)
    dets = sorted(dets, key=lambda d: -d[2])
    return dict(image_id=1, gt_boxes=np.array([b for b, _ in gt_all], float).reshape(-1, 4),
                gt_labels=np.array([c for _, c in gt_all], int),
                gt_crowd=np.array([False] * len(gt) + [True] * len(crowd), bool),
                det_boxes=np.array([d[0] for d in dets], float).reshape(-1, 4),
                det_labels=np.array([d[1] for d in dets], int), det_scores=np.array([d[2] for d in dets], float))


def shifted(box, dx):
    return [box[0] + dx, box[1], box[2] + dx, box[3]]


def coco_ap(points):
    """COCO's 101-point AP of a precision step curve: ``points`` [(recall reached, precision)]."""
    total = 0.0
    for r in np.linspace(0, 1, 101):
        total += max([p for reach, p in points if reach >= r - 1e-12] or [0.0])
    return total / 101


def test_a_perfect_model_has_a_diagonal_matrix_and_no_error():
    image = scene([(A, 1), (B, 2)], [(A, 1, 0.9), (B, 2, 0.8)])
    matrix, per_image = analysis.confusion_matrix([image], 2)
    assert matrix.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]
    assert per_image == [dict(missed=0, false=0, confused=0)]
    errors = analysis.error_breakdown([image], 2)
    assert errors["ap"] == pytest.approx(1.0)
    assert all(v == 0 for v in errors["dap"].values()) and all(v == 0 for v in errors["counts"].values())


def test_a_swapped_class_is_a_classification_error():
    image = scene([(A, 1)], [(A, 2, 0.9)])
    matrix, per_image = analysis.confusion_matrix([image], 2)
    assert matrix[0, 1] == 1 and matrix.sum() == 1 and per_image[0]["confused"] == 1
    errors = analysis.error_breakdown([image], 2)
    assert errors["counts"]["cls"] == 1 and errors["counts"]["miss"] == 0  # the object was targeted
    assert errors["ap"] == 0 and errors["dap"]["cls"] == pytest.approx(1.0)
    assert sum(errors["dap"].values()) == pytest.approx(1.0)


def test_a_shifted_box_is_a_localisation_error():
    box = shifted(A, 25)  # IoU 15/65: between the background 0.1 and the foreground 0.5
    assert 0.1 < analysis.box_iou([box], [A])[0, 0] < 0.5
    image = scene([(A, 1)], [(box, 1, 0.9)])
    matrix, _ = analysis.confusion_matrix([image], 1)
    assert matrix.tolist() == [[0, 1], [1, 0]]  # one missed object, one false detection
    errors = analysis.error_breakdown([image], 1)
    assert errors["counts"]["loc"] == 1 and errors["counts"]["miss"] == 0
    assert errors["dap"]["loc"] == pytest.approx(1.0) and errors["dap"]["bkg"] == 0


def test_a_duplicate_costs_the_precision_it_takes():
    # A found (0.9), A again (0.8), B found (0.7): precision 1 up to recall 0.5, then 2/3
    image = scene([(A, 1), (B, 1)], [(A, 1, 0.9), (shifted(A, 2), 1, 0.8), (B, 1, 0.7)])
    matrix, per_image = analysis.confusion_matrix([image], 1)
    assert matrix.tolist() == [[2, 0], [1, 0]] and per_image[0]["false"] == 1
    errors = analysis.error_breakdown([image], 1)
    assert errors["counts"]["dupl"] == 1
    assert errors["ap"] == pytest.approx(coco_ap([(0.5, 1.0), (1.0, 2 / 3)]))
    assert errors["dap"]["dupl"] == pytest.approx(1.0 - errors["ap"])
    assert errors["dap"]["bkg"] == 0 and errors["dap"]["loc"] == 0


def test_a_missed_object_and_a_background_detection():
    image = scene([(A, 1), (B, 1)], [(A, 1, 0.9), ([200, 200, 240, 260], 1, 0.95)])
    matrix, per_image = analysis.confusion_matrix([image], 1)
    assert matrix.tolist() == [[1, 1], [1, 0]] and per_image[0] == dict(missed=1, false=1, confused=0)
    errors = analysis.error_breakdown([image], 1)
    assert errors["counts"]["miss"] == 1 and errors["counts"]["bkg"] == 1
    # as is: a false detection first, then A; without the background one: precision 1 to recall 0.5
    assert errors["ap"] == pytest.approx(coco_ap([(0.5, 0.5)]))
    assert errors["dap"]["bkg"] == pytest.approx(coco_ap([(0.5, 1.0)]) - errors["ap"])
    assert errors["dap"]["miss"] == pytest.approx(coco_ap([(1.0, 0.5)]) - errors["ap"])  # 1 object left to find


def test_a_crowd_region_is_neither_missed_nor_false():
    crowd = [0, 100, 200, 200]
    image = scene([(A, 1)], [(A, 1, 0.9), ([20, 120, 60, 160], 1, 0.8)], crowd=[(crowd, 1)])
    matrix, per_image = analysis.confusion_matrix([image], 1)
    assert matrix.tolist() == [[1, 0], [0, 0]] and per_image[0] == dict(missed=0, false=0, confused=0)
    errors = analysis.error_breakdown([image], 1)
    assert errors["ap"] == pytest.approx(1.0) and sum(errors["counts"].values()) == 0
    # a detection of another class on that crowd region is a false detection, as COCO scores it
    # (a crowd region is ignored for its own class only), in the matrix and in the breakdown alike
    image = scene([(A, 1)], [(A, 1, 0.9), ([20, 120, 60, 160], 2, 0.8)], crowd=[(crowd, 1)])
    matrix, per_image = analysis.confusion_matrix([image], 2)
    assert matrix.tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 0]] and per_image[0] == dict(missed=0, false=1, confused=0)
    assert analysis.error_breakdown([image], 2)["counts"]["bkg"] == 1


def test_the_score_threshold_decides_what_the_matrix_counts():
    image = scene([(A, 1)], [(A, 1, 0.3)])
    assert analysis.confusion_matrix([image], 1, score_threshold=0.5)[0].tolist() == [[0, 1], [0, 0]]
    assert analysis.confusion_matrix([image], 1, score_threshold=0.2)[0].tolist() == [[1, 0], [0, 0]]


@pytest.mark.parametrize("height, width, panel_size", [
    (96, 128, (384, 288)),  # a demo image: upscaled to a long side of 384
    (3000, 4000, (640, 480)),  # a phone photo: scaled down to 640, not an 8000-px JPEG
    (500, 600, (600, 500)),  # in between: as it is
])
def test_gallery_panels_are_scaled_into_a_readable_range(height, width, panel_size):
    gt, det = [10, 10, 50, 40], [12, 10, 50, 44]
    image = scene([(gt, 1)], [(det, 1, 0.9)])
    figure = gallery.gallery_figure(np.zeros((height, width, 3), np.uint8), image, ["cat"], 0.5, 0.5)
    bar, gap = 22, 8
    assert figure.size == (2 * panel_size[0] + gap, panel_size[1] + bar)


def test_a_narrow_gallery_image_keeps_its_titles_whole():
    image = scene([([2, 10, 20, 300], 1)], [])
    figure = gallery.gallery_figure(np.zeros((900, 30, 3), np.uint8), image, ["cat"], 0.5, 0.5)
    assert figure.width > 2 * 150  # each panel as wide as "ground truth: 1 (1 missed)", not 13 px


def test_a_class_name_the_font_cannot_draw_makes_no_warning_per_glyph(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plots.plot_confusion(np.array([[2, 1, 0], [0, 1, 0], [0, 0, 0]]), ["猫", "x" * 120], 0.5, 0.5,
                              str(tmp_path / "confusion.png"))  # and a long name: cut, no layout warning
    assert [str(w.message) for w in caught] == [] and os.path.getsize(tmp_path / "confusion.png") > 1000


def test_the_error_figure_puts_the_mask_bars_beside_the_box_ones(tmp_path, monkeypatch):
    def breakdown(loc, ap):
        return dict(dap={k: (loc if k == "loc" else 0.0) for k in analysis.ERROR_KINDS}, ap=ap,
                    counts={k: (3 if k == "loc" else 0) for k in analysis.ERROR_KINDS})

    drawn = []
    monkeypatch.setattr(plots, "_save_figure", lambda fig, path, dpi: drawn.append(fig))
    plots.plot_errors(breakdown(0.1, 0.8), str(tmp_path / "e.png"))
    plots.plot_errors(breakdown(0.1, 0.8), str(tmp_path / "e.png"), masks=breakdown(0.4, 0.5))
    (boxes_only,), (both,) = (fig.axes for fig in drawn)
    assert len(boxes_only.patches) == len(analysis.ERROR_KINDS) and boxes_only.get_legend() is None
    assert len(both.patches) == 2 * len(analysis.ERROR_KINDS)
    assert [t.get_text() for t in both.get_legend().get_texts()] == ["boxes", "masks"]
    widths = sorted(p.get_width() for p in both.patches if p.get_width() > 0)
    assert widths == pytest.approx([0.1, 0.4])  # the localisation errors by box and by mask
    assert both.get_xlabel() == "AP50 gained if fixed\n(bbox AP50 now 0.800, segm AP50 now 0.500)"
    assert boxes_only.get_xlabel() == "AP50 gained if fixed (bbox AP50 now 0.800)"


@pytest.mark.parametrize("tied", [False, True])  # tied: a saturated model, most scores exactly 1.0
def test_ap_as_is_equals_pycocotools_ap50_per_class(tied, capsys):
    rng = np.random.default_rng(0)

    def score():
        return float(rng.choice([0.5, 1.0, 1.0])) if tied else float(rng.random())

    images, annotations, results = [], [], []
    for image_id in range(1, 9):
        images.append(dict(id=image_id, width=200, height=200))
        for _ in range(int(rng.integers(0, 4))):
            x, y, w, h = (float(v) for v in rng.uniform([0, 0, 10, 10], [150, 150, 50, 50]))
            label = int(rng.integers(1, 3))
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id, category_id=label,
                                    bbox=[x, y, w, h], area=w * h, iscrowd=int(rng.random() < 0.1)))
            for _ in range(int(rng.integers(0, 3))):  # near misses, duplicates, wrong classes
                jitter = rng.normal(0, 6, 4)
                results.append(dict(image_id=image_id, category_id=int(rng.integers(1, 3)),
                                    bbox=[x + jitter[0], y + jitter[1], max(2.0, w + jitter[2]),
                                          max(2.0, h + jitter[3])], score=score()))
        results.append(dict(image_id=image_id, category_id=1, bbox=list(map(float, rng.uniform(0, 150, 4))),
                            score=score()))
    gt = COCO()
    gt.dataset = dict(images=images, annotations=annotations, categories=[dict(id=1), dict(id=2)])
    gt.createIndex()
    dt = gt.loadRes(results)
    ev = COCOeval(gt, dt, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    capsys.readouterr()
    ours = analysis.error_breakdown(analysis.images_from_coco(gt, dt), 2)
    assert ours["ap"] == pytest.approx(ev.stats[1], abs=1e-9)  # AP50
    assert sum(ours["counts"].values()) > 5 and max(ours["dap"].values()) > 0



# --- masks: the same analysis on segm IoU --------------------------------------------------------

SIZE = 100  # the mask scenes' images: SIZE x SIZE


def mask_of(*rects):
    """A SIZE x SIZE uint8 mask, the union of ``rects`` (x0, y0, x1, y1; pixels x0..x1-1, y0..y1-1)."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    for x0, y0, x1, y1 in rects:
        mask[y0:y1, x0:x1] = 1
    return mask


# A thin L (its box x 10-50, y 10-90, filled to 1100 of 3200 pixels) and, beside it, a thin
# crowd-region L (box x 60-95, y 10-50) with nothing in its upper right corner.
L_OBJECT = mask_of((10, 10, 20, 90), (10, 80, 50, 90))
L_CROWD = mask_of((60, 10, 65, 50), (60, 45, 95, 50))
BOX_OF_L = mask_of((10, 10, 50, 90))  # fits the object's box exactly; mask IoU 1100 / 3200
IN_THE_CORNER = mask_of((75, 15, 90, 35))  # inside the crowd region's box, outside its mask


def ground_truth(objects):
    """A COCO ground truth of one SIZE x SIZE image per entry of ``objects`` [[(mask, label, crowd)]]:
    masks as compressed RLEs, crowd regions as uncompressed ones (as exporters write them)."""
    images, annotations = [], []
    for image_id, anns in enumerate(objects, 1):
        images.append(dict(id=image_id, width=SIZE, height=SIZE))
        for mask, label, crowd in anns:
            ys, xs = np.nonzero(mask)
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id, category_id=label,
                                    iscrowd=int(crowd), area=float(mask.sum()),
                                    bbox=[float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()),
                                          float(ys.max() + 1 - ys.min())],
                                    segmentation=mask_to_rle(mask, compressed=not crowd)))
    gt = COCO()
    gt.dataset = dict(images=images, annotations=annotations, categories=[dict(id=1), dict(id=2)])
    gt.createIndex()
    return gt


def evaluator(gt, detections, iou_types=("bbox", "segm")):
    """A ``CocoEvaluator`` as an evaluation leaves it, of ``detections`` {image_id: [(mask, label, score)]}
    (each detection's box: its mask's extent, as Mask R-CNN's boxes are not, but close enough here)."""
    ev = CocoEvaluator(gt, list(iou_types))
    predictions = {}
    for image_id in gt.getImgIds():
        dets = detections.get(image_id, [])
        boxes = [[float(np.nonzero(m)[1].min()), float(np.nonzero(m)[0].min()), float(np.nonzero(m)[1].max() + 1),
                  float(np.nonzero(m)[0].max() + 1)] for m, _, _ in dets]
        predictions[image_id] = dict(boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                     labels=torch.tensor([c for _, c, _ in dets], dtype=torch.int64),
                                     scores=torch.tensor([s for _, _, s in dets], dtype=torch.float32),
                                     masks=torch.from_numpy(np.array([m for m, _, _ in dets], np.float32)
                                                            .reshape(-1, 1, SIZE, SIZE)))
    ev.update(predictions)
    ev.synchronize_between_processes()
    ev.accumulate()
    return ev


def box_and_mask_images(ev):
    boxes, segm = ev.coco_eval["bbox"], ev.coco_eval["segm"]
    return (analysis.images_from_coco(boxes.cocoGt, boxes.cocoDt, boxes.params.imgIds),
            analysis.images_from_coco(segm.cocoGt, segm.cocoDt, segm.params.imgIds, masks=True))


def l_scene():
    """The L object found by its box's rectangle (0.9) and a detection in the crowd region's empty corner (0.8)."""
    gt = ground_truth([[(L_OBJECT, 1, False), (L_CROWD, 1, True)]])
    return gt, evaluator(gt, {1: [(BOX_OF_L, 1, 0.9), (IN_THE_CORNER, 1, 0.8)]})


def test_a_box_that_fits_an_l_shaped_mask_is_found_by_box_and_missed_by_mask():
    gt, ev = l_scene()
    box_images, mask_images = box_and_mask_images(ev)
    assert analysis.image_iou(mask_images[0], [0], [0])[0, 0] == pytest.approx(1100 / 3200)
    assert analysis.image_iou(box_images[0], [0], [0])[0, 0] == pytest.approx(1.0)

    boxes, per_image = analysis.confusion_matrix(box_images, 2)
    assert boxes.tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0]] and per_image[0] == dict(missed=0, false=0, confused=0)
    masks, per_image = analysis.confusion_matrix(mask_images, 2)
    # the L: missed, its rectangle: a false detection; the corner one, on the crowd region's box but
    # not its mask (overlap / own area 0 by mask, 1 by box): false by mask, ignored by box
    assert masks.tolist() == [[0, 0, 1], [0, 0, 0], [2, 0, 0]] and per_image[0] == dict(missed=1, false=2, confused=0)

    by_box, by_mask = analysis.error_breakdown(box_images, 2), analysis.error_breakdown(mask_images, 2)
    assert by_box["ap"] == pytest.approx(1.0) and sum(by_box["counts"].values()) == 0
    assert by_mask["ap"] == 0 and by_mask["counts"] == dict(cls=0, loc=1, both=0, dupl=0, bkg=1, miss=0)
    assert by_mask["dap"]["loc"] == pytest.approx(1.0)
    ev.summarize()
    assert ev.coco_eval["bbox"].stats[1] == pytest.approx(by_box["ap"]) and ev.coco_eval["segm"].stats[1] == 0


def test_a_mask_inside_a_crowd_region_is_ignored_by_mask_too():
    gt = ground_truth([[(L_OBJECT, 1, False), (L_CROWD, 1, True)]])
    on_the_crowd = mask_of((60, 20, 64, 50))  # its whole mask on the crowd region's vertical bar
    _, mask_images = box_and_mask_images(evaluator(gt, {1: [(L_OBJECT, 1, 0.9), (on_the_crowd, 1, 0.8)]}))
    masks, per_image = analysis.confusion_matrix(mask_images, 2)
    assert masks.tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0]] and per_image[0] == dict(missed=0, false=0, confused=0)
    assert sum(analysis.error_breakdown(mask_images, 2)["counts"].values()) == 0


def test_mask_ap_as_is_equals_pycocotools_segm_ap50(capsys):
    rng = np.random.default_rng(1)
    objects, detections = [], {}
    for image_id in range(1, 7):
        anns = []
        for _ in range(int(rng.integers(1, 4))):
            x, y = (int(v) for v in rng.integers(4, 56, 2))
            w, h, t = int(rng.integers(15, 40)), int(rng.integers(15, 40)), int(rng.integers(3, 12))
            shape = mask_of((x, y, x + t, y + h), (x, y + h - t, x + w, y + h))  # Ls of random thickness
            anns.append((shape, int(rng.integers(1, 3)), bool(rng.random() < 0.15)))
            for _ in range(int(rng.integers(0, 3))):  # rectangles and shifted copies: near misses, duplicates
                dx, dy = (int(v) for v in rng.integers(-4, 5, 2))
                guess = mask_of((x + dx, y + dy, x + w + dx, y + h + dy)) if rng.random() < 0.5 else \
                    np.roll(shape, (dy, dx), axis=(0, 1))
                detections.setdefault(image_id, []).append((guess, int(rng.integers(1, 3)), float(rng.random())))
        objects.append(anns)
    ev = evaluator(ground_truth(objects), detections)
    ev.summarize()
    capsys.readouterr()
    _, mask_images = box_and_mask_images(ev)
    ours = analysis.error_breakdown(mask_images, 2)
    assert ours["ap"] == pytest.approx(ev.coco_eval["segm"].stats[1], abs=1e-9)  # segm AP50
    assert ours["ap"] != pytest.approx(ev.coco_eval["bbox"].stats[1], abs=1e-3)  # not the box number again
    assert sum(ours["counts"].values()) > 5


@pytest.mark.parametrize("case", ["masks", "box_only_model", "box_only_data"])
def test_the_report_shows_the_mask_analysis_only_with_masks(case, tmp_path):
    gt, ev = l_scene()
    if case == "box_only_model":
        ev = evaluator(gt, {1: [(BOX_OF_L, 1, 0.9), (IN_THE_CORNER, 1, 0.8)]}, iou_types=("bbox",))
    # a mask model evaluated on box-only data: its "masks" are the boxes, nothing to show
    dataset = CocoFormatDataset([], [dict(id=1, name="a"), dict(id=2, name="b")], None, case != "box_only_data")
    summary = dict(bbox=dict(AP=1.0, AP50=1.0, AP75=1.0, AR100=1.0), per_class={})
    report.write_report(str(tmp_path), report.ReportInputs(ev, dataset, [dict(id=1, name="a"), dict(id=2, name="b")],
                                                           [("data", "hand-made")], summary, gallery_size=0))
    data = json.load(open(tmp_path / "report" / "report.json"))
    page = open(tmp_path / "report" / "report.html").read()
    assert data["confusion_matrix"]["counts"] == [[1, 0, 0], [0, 0, 0], [0, 0, 0]]  # boxes as before
    assert data["errors"]["ap"] == pytest.approx(1.0) and sum(data["errors"]["counts"].values()) == 0
    if case == "masks":
        assert data["masks"]["confusion_matrix"] == dict(labels=["a", "b", "background"],
                                                         counts=[[0, 0, 1], [0, 0, 0], [2, 0, 0]])
        assert data["masks"]["errors"]["counts"] == dict(cls=0, loc=1, both=0, dupl=0, bkg=1, miss=0)
        assert "<h3>Masks (segm IoU" in page and "<th>masks: how many</th>" in page
        assert "segm AP50 as is: 0.000" in page
        assert '<img src="confusion_masks.png"' in page
        assert os.path.getsize(tmp_path / "report" / "confusion_masks.png") > 1000
    else:
        assert "masks" not in data and "Masks" not in page and "masks: how many" not in page
        assert "<th>how many</th>" in page
        assert not (tmp_path / "report" / "confusion_masks.png").exists() and "confusion_masks" not in page

# --- the report of a run ------------------------------------------------------------------------

class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.files, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.files += [v for k, v in attrs if k in ("src", "href")]


def check_report(folder, classes):
    """report.html parses, names only files that exist (relative, no network), and report.json agrees."""
    with open(os.path.join(folder, "report.html")) as f:
        page = Page()
        page.feed(f.read())
    assert page.files and page.tags.count("img") == len(page.files)
    for name in page.files:
        assert "://" not in name and os.path.isfile(os.path.join(folder, name)), name
    data = json.load(open(os.path.join(folder, "report.json")))
    assert data["confusion_matrix"]["labels"] == classes + ["background"]
    assert {"confusion.png", "errors.png", "pr.png"} <= set(page.files)
    assert set(data["errors"]["dap"]) == set(analysis.ERROR_KINDS)
    assert not os.path.exists(os.path.join(os.path.dirname(folder), report.PARTIAL))
    return data, page.files


@pytest.fixture(scope="module")
def run(one_thread, data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run"))
    result = run_main(*tiny_argv(data, out, "--test-size", "3", "--score-threshold", "0.05", weights="none", lr="3e-4"))
    return data, out, result


def test_a_run_writes_its_report(run):
    data, out, result = run
    folder = os.path.join(out, "report")
    report_data, files = check_report(folder, ["pedestrian"])
    assert "curves.png" in files and "confusion_masks.png" in files  # Mask R-CNN: the masks' matrix too
    gallery = [f for f in files if f.startswith("gallery/")]
    assert len(gallery) == 3  # every test image

    assert all(max(Image.open(os.path.join(folder, f)).size) >= 384 for f in gallery)
    errors = [sum(g[k] for k in ("missed", "false", "confused")) for g in report_data["gallery"]]
    assert errors == sorted(errors, reverse=True)  # worst first
    counts = np.array(report_data["confusion_matrix"]["counts"])
    objects = sum(len(t["boxes"]) for t in (run_target(data, i) for i in range(3)))
    assert counts[0].sum() == objects  # every test object is found or missed, once
    assert report_data["metrics"]["bbox"] == pytest.approx(result["bbox"])
    mask_counts = np.array(report_data["masks"]["confusion_matrix"]["counts"])  # Mask R-CNN: masks too
    assert mask_counts[0].sum() == objects and report_data["masks"]["errors"]["ap"] == pytest.approx(
        result["segm"]["AP50"], abs=1e-9)


def run_target(data, i):
    """The i-th test image's target, as the run held it out."""

    split = load_datasets(data, tv_training.PennFudanDataset, tv_training.get_transform, DataSplit(3, None, 0),
                          None, None)
    return split["test"][i][1]


def test_test_only_keeps_the_earlier_report_and_an_empty_output_dir_writes_nothing(run, tmp_path, monkeypatch):
    data, out, _ = run
    argv = ["--test-only", "--weights", os.path.join(out, "checkpoint.pth"), "--data-path", data, "-j", "0",
            "--test-size", "3"]
    first = open(os.path.join(out, "report", "report.html")).read()
    # Ctrl-C while the report is drawn: no partial folder, the earlier report as it was
    monkeypatch.setattr(report, "write_gallery", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        run_main(*argv, "--output-dir", out)
    assert open(os.path.join(out, "report", "report.html")).read() == first
    assert not os.path.exists(os.path.join(out, report.PARTIAL))
    monkeypatch.undo()
    run_main(*argv, "--output-dir", out)
    run_main(*argv, "--output-dir", out)
    earlier = sorted(os.listdir(os.path.join(out, "report", "earlier")))
    assert len(earlier) == 2  # the training run's report, then the first --test-only's
    assert open(os.path.join(out, "report", "earlier", earlier[0], "report.html")).read() == first
    data_now, _ = check_report(os.path.join(out, "report"), ["pedestrian"])
    assert "lr=0.0003" in data_now["run"]["recipe"]  # the checkpoint's recipe, not this command's defaults
    assert data_now["run"]["model"].startswith("maskrcnn_resnet18 from ")
    before = set(os.listdir(tmp_path))
    monkeypatch.chdir(tmp_path)
    run_main(*argv, "--output-dir", "")
    assert set(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("case", ["rename_refused", "a_file_named_report"])
def test_a_report_that_cannot_be_put_in_place_is_one_line_and_keeps_the_earlier(case, run, tmp_path, monkeypatch,
                                                                                capsys):

    data, out, _ = run
    target = tmp_path / "out"
    target.mkdir()
    if case == "rename_refused":  # report/ made by another user: nothing may be moved out of it
        shutil.copytree(os.path.join(out, "report"), target / "report")
        (target / "report" / "earlier" / "20261204-101010").mkdir(parents=True)
        before = {p: open(p, "rb").read() for p in map(str, (target / "report").rglob("*")) if os.path.isfile(p)}
        replace = os.replace

        def refuse_inside_report(source, dest):
            if str(source) == str(target / "report") or str(source).startswith(str(target / "report") + os.sep):
                raise PermissionError(1, "Operation not permitted")
            replace(source, dest)

        monkeypatch.setattr(os, "replace", refuse_inside_report)
    else:
        (target / "report").write_text("my notes")
    code, _, err = cli(["--test-only", "--weights", os.path.join(out, "checkpoint.pth"), "--data-path", data, "-j",
                        "0", "--test-size", "3", "--output-dir", str(target)], capsys)
    said = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(said) == 1 and "Traceback" not in err
    if case == "rename_refused":
        assert said[0].startswith(f"error: {target / 'report'}: cannot put the new report in place (Operation not "
                                  f"permitted); the report was not written, and an earlier one there is as it was.")
        after = {p: open(p, "rb").read() for p in map(str, (target / "report").rglob("*")) if os.path.isfile(p)}
        assert after == before and (target / "report" / "earlier" / "20261204-101010").is_dir()
    else:
        assert said[0].startswith(f"error: {target / 'report'}: a file, where the report's folder goes")
        assert (target / "report").read_text() == "my notes"
    assert sorted(os.listdir(target)) == ["report"]  # no report.partial left


def test_ctrl_c_while_the_report_is_drawn_says_training_is_complete_and_how_to_redraw_it(run, tmp_path,
                                                                                       monkeypatch, capsys):

    data, out, _ = run
    target = tmp_path / "run"
    monkeypatch.setattr(report, "write_gallery", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    code, _, err = cli(tiny_argv(data, str(target), "--test-size", "3", weights="none"), capsys)
    ckpt = target / "checkpoint.pth"
    said, _, command = err.strip().partition("; to write the report again: ")
    assert code == 130 and said == (f"interrupted after the last epoch: training is complete (saved in {ckpt}), but "
                                    f"the final figures or the report may be missing")
    assert not (target / "report").exists() and not (target / report.PARTIAL).exists()
    monkeypatch.undo()

    argv = shlex.split(command)
    assert argv[:2] == [interrupts.python_command(), "tv_training.py"]
    assert argv[-3:] == ["--test-only", "--weights", str(ckpt)]
    code, _, _ = cli(argv[2:], capsys)  # the command it gives
    assert code == 0
    check_report(str(target / "report"), ["pedestrian"])


def test_overwrite_moves_the_replaced_runs_report_to_earlier(tmp_path):
    (tmp_path / "checkpoint.pth").write_bytes(b"weights")
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "predictions").mkdir()
    (tmp_path / "predictions" / "a.png").write_bytes(b"figure")
    folder = tmp_path / "report"
    (folder / "earlier" / "20260101-000000").mkdir(parents=True)
    (folder / "gallery").mkdir()
    (folder / "gallery" / "001-image1.jpg").write_bytes(b"jpeg")
    (folder / "report.html").write_text("the replaced run's")
    run_folder.clear_earlier_run(str(tmp_path))
    assert os.listdir(tmp_path) == ["report"] and os.listdir(folder) == ["earlier"]
    moved = [e for e in os.listdir(folder / "earlier") if e != "20260101-000000"]
    assert len(moved) == 1 and (folder / "earlier" / moved[0] / "report.html").read_text() == "the replaced run's"
    assert (folder / "earlier" / moved[0] / "gallery" / "001-image1.jpg").read_bytes() == b"jpeg"


def test_a_replaced_runs_report_that_cannot_move_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.html").write_text("another user's")

    def refused(source, dest):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(report.TutorialError) as info:
        report.archive_report(str(tmp_path))
    assert str(info.value).startswith(f"{tmp_path / 'report'}: cannot move the replaced run's report to ")
    assert "(Operation not permitted)" in str(info.value) and "\n" not in str(info.value)
    assert (tmp_path / "report" / "report.html").read_text() == "another user's"


def test_coco_data_with_three_classes(one_thread, tmp_path):
    train, val = synthetic.make_synthetic_coco(str(tmp_path / "shapes"), num_train=4, num_val=3, seed=1,
                                                    height_range=(64, 64), width_range=(80, 96))
    out = str(tmp_path / "run")
    run_main("--demo", "--data-path", train, "--test-data-path", val, "--output-dir", out, "--min-size", "64",
             "--max-size", "96", "--epochs", "1", "-j", "0", "--aspect-ratio-group-factor", "0",
             "--score-threshold", "0")
    data, _ = check_report(os.path.join(out, "report"), ["pedestrian", "ball", "sign"])
    counts = np.array(data["confusion_matrix"]["counts"])
    gt = COCO(val)
    objects = [a for a in gt.dataset["annotations"] if not a.get("iscrowd")]
    assert counts.shape == (4, 4) and counts[:3].sum() == len(objects)
    assert len(data["gallery"]) == 3


@pytest.mark.browser
# CI (.ci/run, CI=true) installs Chromium and runs this test on every landing: there it fails, not skips
@pytest.mark.skipif(shutil.which("chromium") is None and not os.environ.get("CI"),
                    reason="needs Chromium (Debian package chromium; .ci/run installs it)")
def test_chromium_shows_the_report(run, tmp_path):
    _, out, _ = run
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,2000",
                    "file://" + os.path.abspath(os.path.join(out, "report", "report.html"))],
                   check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), float)
    assert pixels.shape == (2000, 1200) and pixels.std() > 10  # text, tables and figures, not a blank page
