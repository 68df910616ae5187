"""The data set build's error: every step raises it with a sentence a user can act on."""

from __future__ import annotations


class DatasetBuildError(Exception):
    """A step of the build failed; the message is a sentence a user can act on."""
