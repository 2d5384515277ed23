"""The error types the library raises; the CLI turns each into one line and an exit code."""

# Every character str.splitlines() breaks on, escaped so a message is always one line
# (user text such as a CSV header may carry any of them).
_ONE_LINE = str.maketrans({c: repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"})


class NncliError(Exception):
    """A user-facing failure: one line of text and the exit status the CLI should use."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        if isinstance(message, str):
            message = message.translate(_ONE_LINE)
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(NncliError):
    """Bad usage or a bad config file (exit 2, click's convention)."""

    exit_code = 2


class DataError(NncliError):
    """A data file that cannot be used (exit 1)."""


class CheckpointError(NncliError):
    """A checkpoint that cannot be read or written (exit 1)."""


class TrainingError(NncliError):
    """Training failed at run time, e.g. the loss became NaN (exit 1)."""


class Interrupted(NncliError):
    """Training stopped by a signal after saving last.h5 (exit 130 or 143)."""

    exit_code = 130
