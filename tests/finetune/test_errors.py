"""finetune/errors.py: a user's error is one line, whatever the names it quotes hold."""

import json

import pytest

from finetune.data import coco
from finetune.errors import DatasetError, TrainingInterrupted, TutorialError, one_line


def test_control_characters_in_a_message_are_escaped():
    for error in (TutorialError("bad\nname\tx\r\x1b"), DatasetError("file a\u2028b"),
                  TrainingInterrupted("interrupted\n", checkpoint="c.pth")):
        assert len(str(error).splitlines()) == 1 and str(error).isprintable()
    assert str(TutorialError("image a\nb.png")) == "image a\\nb.png"
    assert one_line("ünïcode and spaces stay") == "ünïcode and spaces stay"
    assert TrainingInterrupted("x", checkpoint="c.pth").checkpoint == "c.pth"


def test_a_coco_file_name_holding_a_newline_is_named_on_one_line(tmp_path):
    """The missing-images error quotes the file names of the JSON (an exporter may write any string)."""
    images = [dict(id=1, file_name="first\nsecond.png", width=8, height=8),
              dict(id=2, file_name="here.png", width=8, height=8)]
    (tmp_path / "here.png").write_bytes(b"")  # found, so the error counts the other one
    path = tmp_path / "train.json"
    path.write_text(json.dumps(dict(images=images, annotations=[], categories=[dict(id=1, name="a")])))
    with pytest.raises(DatasetError) as e:
        coco.load_coco_images(str(path))
    assert "first\\nsecond.png" in str(e.value) and len(str(e.value).splitlines()) == 1
