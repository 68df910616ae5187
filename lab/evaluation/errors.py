"""The evaluation's one error: a problem the user can fix; str() says how."""

from __future__ import annotations


class EvaluationError(Exception):
    """A problem the user can fix (missing photos, missing weights, bad arguments); str() says how."""
