"""The one exception type for bad user input.

It subclasses ``ValueError`` so Python callers can catch either; the CLI turns it into exit code 2
and the widgets into a notification.
"""


class InputError(ValueError):
    """Bad user input: the message names the problem and the fix."""


class ModelFileError(InputError):
    """A model file that cannot be read safely (corrupt, truncated, foreign or from a newer format)."""


class TrainingFailedError(InputError):
    """A training run that learned nothing usable (see ``slimseg.training.FAILED_DICE``); no model is kept."""
