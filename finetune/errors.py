"""Errors a user can fix: the command line prints their one-line message, without a traceback."""


def one_line(text):
    """``text`` with its control characters written as escapes (a newline as ``\\n``): a file name,
    id or label holding one would otherwise split the line it is named in."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class TutorialError(Exception):
    """A problem the user can fix; the command line prints its one-line message and exits 1.
    The message is kept on one line (``one_line``), whatever names it quotes."""

    def __init__(self, message="", *args):
        super().__init__(one_line(message), *args)


class DatasetError(TutorialError):
    """The data on disk is missing or malformed; the message names the file and the fix."""


class TrainingInterrupted(TutorialError):
    """Ctrl-C: the checkpoint on disk (``.checkpoint``, or None) holds the last complete epoch."""

    def __init__(self, message, checkpoint=None):
        super().__init__(message)
        self.checkpoint = checkpoint
        self.finished = None  # the checkpoint of a run interrupted after its last epoch
