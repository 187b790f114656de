"""How a command-line run ends when it cannot finish: one line on stderr and an exit status (130
after Ctrl-C, 1 after an error), never a traceback for what a user can fix."""

import contextlib
import os
import signal
import sys

import utils
from finetune.errors import TrainingInterrupted, TutorialError
from finetune.hardware import is_out_of_memory
from finetune.run import interrupts


def interrupted_line(export=None, predict=None, output_dir="", test_only=False):
    """What a Ctrl-C outside training (``--export``, ``--predict``, ``--test-only``, or before
    training started) left behind."""
    if export:
        return f"interrupted: {export} was not written (an earlier file there is as it was)"
    if predict:
        where = os.path.join(output_dir or ".", "predict")
        return (f"interrupted: the images done so far have their .png and .json in {where} (each file whole); "
                "results.json, for all the images, was not written")
    if test_only:
        return "interrupted during evaluation: nothing was written"
    return ("interrupted before training started: no checkpoint written, and a dataset being generated "
            "or extracted was discarded")


def _leave(message, status):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run is over: a late press must not cut the message
    print(f"\n{message}" if status == 130 else message, file=sys.stderr)
    sys.exit(status)


@contextlib.contextmanager
def one_line_errors(argv, interrupted_message):
    """Around ``main``: a stopped training run prints how to resume it (``argv``: the command line
    as typed), another Ctrl-C prints ``interrupted_message``; running out of memory and the
    project's own errors (``TutorialError``) are one line. Other exceptions are bugs and keep
    their traceback."""
    try:
        yield
    except TrainingInterrupted as e:
        hint = f"; resume with: {interrupts.resume_command(argv, e.checkpoint)}" if e.checkpoint else \
            f"; to write the report again: {interrupts.report_command(argv, e.finished)}" if e.finished else ""
        _leave(f"{e}{hint}", 130)
    except KeyboardInterrupt:
        _leave(interrupted_message, 130)
    except (MemoryError, RuntimeError) as e:
        if not isinstance(e, MemoryError) and not is_out_of_memory(e):
            raise
        _leave(f"error: out of memory ({str(e).splitlines()[0][:160]}). Lower --batch-size, or --min-size/--max-size "
               f"(the model's input size); checkpoints already written are whole.", 1)
    except TutorialError as e:
        if utils.is_dist_avail_and_initialized() and not utils.is_main_process():
            # under torchrun the other ranks' prints are silenced: an error must still show
            print(f"[rank {utils.get_rank()}] error: {e}", file=sys.stderr, force=True)
            sys.exit(1)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def check_failed_images(result):
    """``--predict`` wrote the other images' results; the images it could not do end the run with status 1."""
    if result.get("failed"):
        print(f"error: {len(result['failed'])} of {len(result['failed']) + len(result['predictions'])} image(s) "
              f"could not be read or predicted (listed above)", file=sys.stderr)
        sys.exit(1)
