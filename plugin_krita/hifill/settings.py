"""The panel's options as Krita stores them (strings in kritarc, group [hifill]) and back."""

from __future__ import annotations

from collections.abc import Callable

from shared_protocol import DEFAULT_ENDPOINT

from .fill_job import FillSettings, OutputMode

SETTINGS_GROUP = "hifill"
MAX_CONTEXT_PX = 8192

ReadSetting = Callable[[str, str, str], str]  # Krita.instance().readSetting(group, name, default)
WriteSetting = Callable[[str, str, str], None]  # Krita.instance().writeSetting(group, name, value)


def load_settings(read: ReadSetting, default_endpoint: str = DEFAULT_ENDPOINT) -> FillSettings:
    """Settings from Krita's store; anything missing or malformed falls back to its default."""
    mode_text = read(SETTINGS_GROUP, "output_mode", OutputMode.NEW_LAYER.value)
    try:
        mode = OutputMode(mode_text)
    except ValueError:
        mode = OutputMode.NEW_LAYER
    context_text = read(SETTINGS_GROUP, "context_px", "auto")
    try:
        context_px: int | None = min(MAX_CONTEXT_PX, max(0, int(context_text)))
    except ValueError:
        context_px = None
    endpoint = read(SETTINGS_GROUP, "endpoint", default_endpoint).strip() or default_endpoint
    keys_folder = read(SETTINGS_GROUP, "keys_folder", "").strip()
    return FillSettings(output_mode=mode, context_px=context_px, endpoint=endpoint, keys_folder=keys_folder)


def save_settings(write: WriteSetting, settings: FillSettings) -> None:
    write(SETTINGS_GROUP, "output_mode", settings.output_mode.value)
    write(SETTINGS_GROUP, "context_px", "auto" if settings.context_px is None else str(settings.context_px))
    write(SETTINGS_GROUP, "endpoint", settings.endpoint)
    write(SETTINGS_GROUP, "keys_folder", settings.keys_folder)
