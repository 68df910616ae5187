"""The options of one fill, the same for both plug-ins: where the result goes, how much context is sent,
which backend answers and with which keys. Standard library only (imported to register the plug-ins).

How each editor stores them stays with the editor: GIMP remembers the procedure's arguments (its
"output-mode" choice uses OutputMode's values), Krita keeps strings in kritarc (plugin_krita's
settings module).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .endpoints import DEFAULT_ENDPOINT
from .regions import MAX_CONTEXT_PX as MAX_CONTEXT_PX  # re-exported: the largest context a plug-in offers


class OutputMode(str, enum.Enum):
    """Where a fill goes. The values are GIMP's choice names; "new_layer" and "in_place" (what Krita
    stored before both plug-ins shared these names) are read as the same modes."""

    NEW_LAYER = "new-layer"  # a new layer directly above the source (one undo removes it)
    IN_PLACE = "in-place"  # the source layer's pixels are replaced

    @classmethod
    def _missing_(cls, value: object) -> OutputMode | None:
        if isinstance(value, str) and "_" in value:
            return next((mode for mode in cls if mode.value == value.replace("_", "-")), None)
        return None

    @classmethod
    def parse(cls, text: str) -> OutputMode:
        """The mode named by `text` (either spelling); ValueError with a sentence naming the modes."""
        try:
            return cls(text)
        except ValueError:
            names = ", ".join(mode.value for mode in cls)
            raise ValueError(f"Unknown output mode '{text}'; use one of {names}.") from None


OUTPUT_MODES = tuple(mode.value for mode in OutputMode)


@dataclass(frozen=True)
class FillSettings:
    """The options of a fill.

    context_px: pixels of surroundings sent around the selection (0..MAX_CONTEXT_PX), None = the
    backend's automatic rule. keys_folder: "" for a backend on this computer, else the client keys
    folder made by `python -m backend keys client NAME` on the backend's machine (CurveKeys).
    """

    output_mode: OutputMode = OutputMode.NEW_LAYER
    context_px: int | None = None
    endpoint: str = DEFAULT_ENDPOINT
    keys_folder: str = ""

    def inpaint_options(self) -> dict[str, int]:
        """The options of the inpaint request these settings make."""
        return inpaint_options(self.context_px)


def inpaint_options(context_px: int | None) -> dict[str, int]:
    """An inpaint request's options for a context of `context_px` (none for the automatic rule)."""
    return {} if context_px is None else {"context_px": context_px}
