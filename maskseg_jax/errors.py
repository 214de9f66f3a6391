"""Error types whose messages name the file or value at fault and what was expected."""


class MasksegError(Exception):
  """Base of every error this package raises on bad input."""


class DataError(MasksegError, ValueError):
  """A dataset file, folder or split is missing, unreadable or inconsistent."""


class ConfigError(MasksegError, ValueError):
  """A config value is unknown, out of range or contradicts another value."""


class CheckpointError(MasksegError, RuntimeError):
  """A checkpoint is missing, damaged or does not match the model."""


class CheckpointMismatchError(CheckpointError):
  """A checkpoint holds arrays of other names or shapes than this run's state: another model, not damage."""
