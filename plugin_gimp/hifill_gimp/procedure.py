"""What the HiFill procedure declares and how a fill is refused: importable without pyzmq or msgpack.

hifill.py registers the procedure from these names alone, so GIMP lists HiFill even when the
plug-in's packages are missing; running it then says what to do (run install.py again) instead of
the plug-in silently not existing.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared_protocol.endpoints import DEFAULT_ENDPOINT  # standard library only, like the two below
from shared_protocol.settings import FillSettings, OutputMode


class FillRefused(Exception):
    """The fill cannot start; the message tells the user why and what to do. Nothing was changed."""


def settings_from_arguments(
    output_mode: str, context_size: int, endpoint: str, keys_folder: str
) -> FillSettings:
    """The procedure's arguments ("output-mode", "context-size", "endpoint", "keys-folder") as the fill's
    settings: context 0 is automatic, an empty endpoint is the default one. FillRefused for an output
    mode that is not one of OutputMode's (GIMP checks its choices; a script may pass anything)."""
    try:
        mode = OutputMode.parse(output_mode)
    except ValueError as error:
        raise FillRefused(str(error)) from None
    return FillSettings(
        mode, context_option(context_size), endpoint.strip() or DEFAULT_ENDPOINT, keys_folder.strip()
    )


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
