"""Errors a user can fix: the command line prints their one-line message, without a traceback."""




class TutorialError(Exception):
    """A problem the user can fix; the command line prints its one-line message and exits 1."""


class DatasetError(TutorialError):
    """The data on disk is missing or malformed; the message names the file and the fix."""


class TrainingInterrupted(TutorialError):
    """Ctrl-C: the checkpoint on disk (``.checkpoint``, or None) holds the last complete epoch."""

    def __init__(self, message, checkpoint=None):
        super().__init__(message)
        self.checkpoint = checkpoint
        self.finished = None  # the checkpoint of a run interrupted after its last epoch
