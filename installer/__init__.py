"""install.py's per-editor modules (gimp.py, krita.py) and their shared machinery (common.py)."""
