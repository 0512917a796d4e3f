"""Exceptions raised by flowfit.

Every error a user can cause (bad data, a broken checkpoint, diverged training) is a
:class:`FlowfitError`, so the command-line tool can print one clear line for it instead of a
traceback.
"""

from __future__ import annotations


class FlowfitError(Exception):
    """Base class of the errors flowfit raises on purpose."""


class InputError(FlowfitError, ValueError):
    """The data or an argument is malformed: wrong shape, NaN or inf, unreadable file."""


class CheckpointError(FlowfitError):
    """A saved model is missing, corrupt, or was written by an incompatible version."""


class TrainingDivergedError(FlowfitError, RuntimeError):
    """The training loss or its gradient stopped being finite."""


class FlowfitWarning(UserWarning):
    """Something the user should know about a result: points far outside the training data,
    many skipped steps, a family replaced for one-dimensional data."""
