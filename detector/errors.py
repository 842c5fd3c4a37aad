"""The project's own error types.

Every problem caused by user input (a config key, a label line, a checkpoint file) is raised as a
`VigilError` whose message names the file, the line or the key, so the command line can print it
without a stack trace.
"""


class VigilError(Exception):
    """Base class: a problem the user can fix, with a message that says where."""


class ConfigError(VigilError):
    """A configuration file or override is invalid."""


class DataError(VigilError):
    """A dataset, video or label file is invalid."""


class CheckpointError(VigilError):
    """A checkpoint cannot be read or does not match the model."""
