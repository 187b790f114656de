"""The run's output folder: an earlier run in it is protected (or cleared by ``--overwrite``), and
it must not lie among a dataset's files, where later runs would read its figures as images."""

import contextlib
import glob
import io
import os
import shutil

from finetune.data.labelme import is_labelme_folder
from finetune.data.yolo import is_yolo_file, read_yolo_yaml
from finetune.errors import DatasetError, TutorialError
from finetune.outputs.report import archive_report


def describe_run(checkpoint):
    """'epoch 3 of 7, bbox AP 0.412' for a checkpoint of ours."""
    args, records = checkpoint.get("args", {}), checkpoint.get("records", [])
    text = f"epoch {checkpoint.get('epoch', '?')} of {args.get('epochs', '?')} (counting from 0)"
    last = records[-1] if records else {}
    scores = [f"{iou} AP {last[iou]['AP']:.3f}" for iou in ("bbox", "segm") if iou in last]
    return text + (", " + ", ".join(scores) if scores else "")


def earlier_run_files(output_dir, resume=None):
    """The files of an earlier training run in ``output_dir`` (none when ``resume`` continues it)."""
    ckpt_path = os.path.join(output_dir, "checkpoint.pth")
    if not (os.path.exists(ckpt_path) or os.path.exists(os.path.join(output_dir, "metrics.json"))):
        return []
    if resume and os.path.exists(ckpt_path) and os.path.exists(resume) and os.path.samefile(resume, ckpt_path):
        return []  # continuing this very run
    return [p for p in (os.path.join(output_dir, name) for name in
                        ("checkpoint.pth", "metrics.json", "curves.png", "preview.png", "best.pth"))
            if os.path.exists(p)]


def protect_earlier_run(output_dir, resume, overwrite, load_checkpoint):
    """A training run must not overwrite another run's checkpoint without being told to.

    Returns the files ``--overwrite`` will clear (the earlier run's outputs); ``clear_earlier_run``
    removes them, once everything else about the new run has been checked.
    """
    files = earlier_run_files(output_dir, resume)
    if not files or overwrite:
        return files
    ckpt_path = os.path.join(output_dir, "checkpoint.pth")
    try:
        what = describe_run(load_checkpoint(ckpt_path)) if os.path.exists(ckpt_path) else "metrics.json"
    except TutorialError:
        what = "a checkpoint that does not load"
    raise TutorialError(f"{output_dir}/ already holds a run ({what}). Continue it with --resume {ckpt_path}, "
                        f"keep it with another --output-dir, or replace it with --overwrite.")


def clear_earlier_run(output_dir, resume=None):
    """``--overwrite``: remove the earlier run's files (``earlier_run_files``) and its figures of
    the test images just before training; its report joins the earlier ones (report/earlier/)."""
    files = earlier_run_files(output_dir, resume)
    for path in files:
        os.remove(path)
    if files:  # else a run without a test set (--test-size 0) would leave the replaced run's as its own
        shutil.rmtree(os.path.join(output_dir, "predictions"), ignore_errors=True)
        # and TensorBoard would show the replaced run's curves as this one's (--tensorboard or not)
        for path in glob.glob(os.path.join(output_dir, "tensorboard", "events.out.tfevents.*")):
            os.remove(path)
        archive_report(output_dir)


def check_output_outside_data(output_dir, data_path):
    """The outputs must not land among a dataset's files: a PNG written into Penn-Fudan's PNGImages/
    or PedMasks/ would be taken for an image or a mask by every later run (their subfolders are
    never read); labelme folders and YOLO split folders are read with their subfolders."""
    out, folder = os.path.realpath(output_dir), os.path.realpath(data_path)
    if is_yolo_file(data_path):  # its split folders are searched for images, subfolders too
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # its notes are printed when the data is read
                splits = read_yolo_yaml(data_path)[1]
        except DatasetError:
            return  # said in one line when the data is read
        for key, entries in splits.items():
            for entry in entries:
                place = os.path.realpath(entry)
                if os.path.isdir(entry) and os.path.commonpath([out, place]) == place:
                    raise TutorialError(f"--output-dir {output_dir}: inside {entry}, the {key} images of {data_path}, "
                                        f"whose subfolders are read too (the figures would be taken for images). "
                                        f"Pick a folder outside it.")
        return
    if str(data_path).lower().endswith(".json"):
        return  # a COCO file lists its images: other files beside them are never read
    if is_labelme_folder(data_path) and os.path.commonpath([out, folder]) == folder:
        raise TutorialError(f"--output-dir {output_dir}: inside the labelme folder {data_path}, whose subfolders are "
                            f"read too (the figures would be taken for unannotated images). Pick a folder outside it.")
    for sub in ("PNGImages", "PedMasks"):
        folder = os.path.realpath(os.path.join(data_path, sub))
        if out == folder:
            raise TutorialError(f"--output-dir {output_dir}: inside the dataset's {sub}/ folder, where the figures "
                                f"would be read as {'images' if sub == 'PNGImages' else 'masks'} by later runs. Pick "
                                f"a folder outside {data_path}/{sub}.")
