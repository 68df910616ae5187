"""What the HiFill procedure declares and how a fill is refused: importable without pyzmq or msgpack.

hifill.py registers the procedure from these names alone, so GIMP lists HiFill even when the
plug-in's packages are missing; running it then says what to do (run install.py again) instead of
the plug-in silently not existing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_ENDPOINT = "tcp://127.0.0.1:47631"  # = shared_protocol.DEFAULT_ENDPOINT (checked by a test)
OUTPUT_NEW_LAYER = "new-layer"
OUTPUT_IN_PLACE = "in-place"
OUTPUT_MODES = (OUTPUT_NEW_LAYER, OUTPUT_IN_PLACE)


class FillRefused(Exception):
    """The fill cannot start; the message tells the user why and what to do. Nothing was changed."""


@dataclass(frozen=True)
class Settings:
    """The procedure's declared arguments. keys_folder: "" for a backend on this computer, else the
    client keys folder made by `python -m backend keys client NAME` on the backend's machine."""

    output_mode: str = OUTPUT_NEW_LAYER
    context_px: int | None = None  # None = auto
    endpoint: str = DEFAULT_ENDPOINT
    keys_folder: str = ""


def context_option(context_px: int) -> int | None:
    """The dialog's context value (0 = auto) as the protocol's context_px (None = auto)."""
    return None if context_px <= 0 else context_px


def warnings_message(warnings: Sequence[str]) -> str | None:
    """What Gimp.message shows after a fill that the backend completed with warnings (e.g. it ran out
    of GPU memory and fell back to a smaller working size or the CPU); None when there are none."""
    sentences = [text.strip() for text in warnings if text.strip()]
    if not sentences:
        return None
    if len(sentences) == 1:
        return f"HiFill: the fill was applied, with a warning: {sentences[0]}"
    return "HiFill: the fill was applied, with warnings:\n" + "\n".join(f"• {s}" for s in sentences)
