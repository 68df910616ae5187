"""Parts of `python -m backend evaluate` (lab/evaluate.py): methods, cases, sheets."""
