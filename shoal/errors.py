"""One exception tree for shoal.

::

    ShoalError                  base of everything shoal raises on purpose
    ├── ConfigError             a bad config key or value (names the key and what is allowed)
    ├── DataError               a missing, corrupt or inconsistent data file or partition
    ├── SpecMismatchError       arrays that do not fit the model's ParamSpec
    ├── WireFormatError         a malformed, truncated, oversized or type-confused message
    ├── CheckpointError         a missing or unreadable checkpoint / run folder
    └── RoundAbortedError       a round that cannot commit (too few clients); the model is unchanged

Every error's message says what was wrong and what to do about it.
"""

from __future__ import annotations


class ShoalError(Exception):
    """Base class of all errors shoal raises on purpose."""


class ConfigError(ShoalError, ValueError):
    """A configuration key or value is wrong."""


class DataError(ShoalError):
    """A data file is missing or corrupt, or a partition cannot be made."""


class SpecMismatchError(ShoalError, ValueError):
    """Arrays do not match the model's parameter specification."""


class WireFormatError(ShoalError, ValueError):
    """A message could not be decoded safely."""


class CheckpointError(ShoalError):
    """A checkpoint or run folder is missing or unreadable."""


class RoundAbortedError(ShoalError):
    """A round could not be committed; the global model stays as it was."""
