"""Errors that are the user's to fix: the CLI prints them as one paragraph and exits with code 2."""


class UsageError(ValueError):
    """Bad input (a name, a value, a missing file) whose message says how to fix it."""


class DatasetUnavailable(UsageError, FileNotFoundError):
    """A dataset is not on disk and could not be downloaded."""


class RunFailed(RuntimeError):
    """A run that cannot go on (a diverging solver, a NaN loss); the message names what helps."""
