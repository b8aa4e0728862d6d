"""The exception types the CLI turns into a one-line message (no traceback), each with its exit code."""


class LyricdistError(Exception):
    """A problem with the user's input: the message says what is wrong and how to fix it."""

    exit_code = 1


class TrainingDiverged(LyricdistError):
    """Training stopped because its loss, gradient norm or weights stopped being finite; nothing non-finite was
    saved, and the last good state and checkpoints are where they were."""

    exit_code = 3


class RunDirLocked(LyricdistError):
    """Another process is writing the run directory (it holds the directory's lock)."""

    exit_code = 4
