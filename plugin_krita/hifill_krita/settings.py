"""The panel's options as Krita stores them (strings in kritarc, group [hifill]) and back.

The options themselves are shared_protocol.settings.FillSettings, the same type GIMP's plug-in uses.
"""

from __future__ import annotations

from collections.abc import Callable

from shared_protocol.endpoints import DEFAULT_ENDPOINT
from shared_protocol.settings import MAX_CONTEXT_PX, FillSettings, OutputMode

SETTINGS_GROUP = "hifill"  # kept when the package became hifill_krita: users' settings stay where they are
AUTO_CONTEXT = "auto"

ReadSetting = Callable[[str, str, str], str]  # Krita.instance().readSetting(group, name, default)
WriteSetting = Callable[[str, str, str], None]  # Krita.instance().writeSetting(group, name, value)


def load_settings(read: ReadSetting, default_endpoint: str = DEFAULT_ENDPOINT) -> FillSettings:
    """Settings from Krita's store; anything missing or malformed is its default. An output mode
    stored in the older spelling ("new_layer", "in_place") is read as the same mode."""
    default = FillSettings(endpoint=default_endpoint)
    try:
        mode = OutputMode.parse(read(SETTINGS_GROUP, "output_mode", default.output_mode.value))
    except ValueError:
        mode = default.output_mode
    context_text = read(SETTINGS_GROUP, "context_px", AUTO_CONTEXT)
    try:
        context_px: int | None = min(MAX_CONTEXT_PX, max(0, int(context_text)))
    except ValueError:
        context_px = None
    endpoint = read(SETTINGS_GROUP, "endpoint", default_endpoint).strip() or default_endpoint
    keys_folder = read(SETTINGS_GROUP, "keys_folder", "").strip()
    return FillSettings(output_mode=mode, context_px=context_px, endpoint=endpoint, keys_folder=keys_folder)


def save_settings(write: WriteSetting, settings: FillSettings) -> None:
    """Store `settings` (the output mode in OutputMode's spelling)."""
    write(SETTINGS_GROUP, "output_mode", settings.output_mode.value)
    context = AUTO_CONTEXT if settings.context_px is None else str(settings.context_px)
    write(SETTINGS_GROUP, "context_px", context)
    write(SETTINGS_GROUP, "endpoint", settings.endpoint)
    write(SETTINGS_GROUP, "keys_folder", settings.keys_folder)
