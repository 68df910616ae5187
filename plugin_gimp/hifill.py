#!/usr/bin/env python3
"""HiFill for GIMP 3: Filters › Enhance › HiFill Inpaint Selection…

GIMP glue only: collect the active layer and selection, let hifill_gimp.plan decide what to read,
send it to the HiFill backend (hifill_gimp.worker, shared_protocol), and write the answer as a new
layer above the source (or in place) inside one undo group. Installed by install.py as
plug-ins/hifill/hifill.py next to hifill_gimp/, shared_protocol/, hifill-backend.json and, when
GIMP's Python lacks pyzmq/msgpack, vendor/.
"""

import sys
import traceback
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent
VENDOR_DIR = PLUGIN_DIR / "vendor"
for _folder in (PLUGIN_DIR, VENDOR_DIR):  # vendored wheels first, so they win over older system copies
    if _folder.is_dir() and str(_folder) not in sys.path[:2]:
        sys.path.insert(0, str(_folder))

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GimpUi, GLib, GObject  # noqa: E402
from hifill_gimp.formats import SELECTION_FORMAT  # noqa: E402
from hifill_gimp.procedure import (  # noqa: E402  (no pyzmq needed to register the procedure)
    FillRefused,
    settings_from_arguments,
    warnings_message,
)

from shared_protocol.endpoints import DEFAULT_ENDPOINT  # noqa: E402  (standard library only)
from shared_protocol.errors import HiFillError  # noqa: E402
from shared_protocol.settings import MAX_CONTEXT_PX, FillSettings, OutputMode  # noqa: E402

PROCEDURE_NAME = "python-fu-hifill-inpaint-selection"
BACKEND_START_TIMEOUT_S = 120.0
FILL_TIMEOUT_S = 900.0


def _settings(config) -> FillSettings:
    names = ("output-mode", "context-size", "endpoint", "keys-folder")
    return settings_from_arguments(*(config.get_property(name) for name in names))


def _drawable_fields(drawable, image) -> dict:
    """What hifill_gimp.plan.DrawableInfo holds about `drawable`."""
    is_layer = isinstance(drawable, Gimp.Layer) and not isinstance(drawable, Gimp.LayerMask)
    group_type = getattr(Gimp, "GroupLayer", None)
    is_group = isinstance(drawable, group_type) if group_type else bool(is_layer and drawable.is_group())
    return dict(
        name=drawable.get_name(),
        is_layer=is_layer,
        is_group=is_group,
        is_rgb=drawable.is_rgb(),
        has_alpha=drawable.has_alpha(),
        precision_nick=image.get_precision().value_nick,
        offsets=tuple(drawable.get_offsets()[1:3]),
        size=(drawable.get_width(), drawable.get_height()),
        content_locked=bool(drawable.get_lock_content()),
    )


def _read(buffer, rect, babl_name: str) -> bytes:
    """Pixels of `rect` (in `buffer`'s coordinates) in `babl_name`; zeros outside the buffer."""
    region = Gegl.Rectangle.new(rect.x, rect.y, rect.width, rect.height)
    return bytes(buffer.get(region, 1.0, babl_name, Gegl.AbyssPolicy.NONE))


def _write(drawable, rect, babl_name: str, pixels: bytes) -> None:
    """Write through the shadow buffer; merge_shadow applies the selection (soft) and records undo."""
    shadow = drawable.get_shadow_buffer()
    shadow.set(Gegl.Rectangle.new(rect.x, rect.y, rect.width, rect.height), babl_name, pixels)
    shadow.flush()
    drawable.merge_shadow(True)
    drawable.update(rect.x, rect.y, rect.width, rect.height)


def fill(image, drawables, settings: FillSettings) -> None:
    """Fill the selection of the one selected layer. Raises FillRefused / HiFillError; on error the
    image is unchanged (nothing is written before the backend's answer is checked). Warnings the
    backend sent with its answer are shown with Gimp.message once the fill is on screen."""
    # Imported when a fill runs: registering the procedure needs only the imports at the top, so a
    # damaged install still lists HiFill and ends in run()'s message (pyzmq is the worker's alone).
    from hifill_gimp.plan import DrawableInfo, check_drawables, check_result, plan_fill  # noqa: PLC0415
    from hifill_gimp.region import harden_mask, layer_to_image  # noqa: PLC0415
    from hifill_gimp.worker import FillJob, run_fill  # noqa: PLC0415

    from shared_protocol.regions import mask_is_empty  # noqa: PLC0415

    source_object = drawables[0] if len(drawables) == 1 else None
    described = [DrawableInfo(**_drawable_fields(d, image)) for d in drawables]
    source = check_drawables(described, settings.output_mode)
    non_empty, x1, y1, x2, y2 = Gimp.Selection.bounds(image)[1:6]
    plan = plan_fill(source, (non_empty, x1, y1, x2, y2), settings)
    pixel_format = plan.pixel_format

    # What is sent: plan.request of the layer's own pixels (never the flattened image) as
    # pixel_format (see hifill_gimp.formats), and the selection over the same pixels as "Y u8",
    # hardened to 255 wherever selected (GIMP applies the feather when merging the result).
    image_bytes = _read(source_object.get_buffer(), plan.request, pixel_format.babl_name)
    selection = image.get_selection()
    mask = harden_mask(_read(selection.get_buffer(), plan.mask_rect, SELECTION_FORMAT))
    if mask_is_empty(mask):
        raise FillRefused(f"The selection does not cover any pixel of '{source.name}'.")

    def on_progress(fraction: float, message: str) -> None:
        Gimp.progress_set_text(f"HiFill: {message}" if message else "HiFill")
        Gimp.progress_update(max(0.0, min(1.0, fraction)))

    # The worker finds the backend (starting the installed one when none answers) and fills, with one
    # Client; its status while a backend starts arrives as progress messages.
    Gimp.progress_init("HiFill: connecting to the backend…")
    job = FillJob(
        settings.endpoint,
        plan.request.width,
        plan.request.height,
        pixel_format.channels,
        pixel_format.dtype,
        settings.inpaint_options(),
        timeout_s=FILL_TIMEOUT_S,
        keys_folder=settings.keys_folder,
        config_dir=str(PLUGIN_DIR),
        start_timeout_s=BACKEND_START_TIMEOUT_S,
    )
    outcome = run_fill(job, image_bytes, mask, [str(PLUGIN_DIR), str(VENDOR_DIR)], on_progress)
    try:
        target = check_result(
            plan,
            outcome.x,
            outcome.y,
            outcome.width,
            outcome.height,
            outcome.channels,
            outcome.dtype,
            len(outcome.pixels),
        )
    except ValueError as error:
        raise FillRefused(
            f"The backend's answer does not fit the request ({error}); nothing was changed."
        ) from None
    if target.is_empty:
        raise FillRefused("The backend returned an empty region; nothing was changed.")
    Gimp.progress_update(1.0)

    image.undo_group_start()
    try:
        if settings.output_mode is OutputMode.IN_PLACE:
            _write(source_object, target, pixel_format.babl_name, outcome.pixels)
        else:
            placed = layer_to_image(target, source.offsets)
            layer = Gimp.Layer.new(
                image,
                f"HiFill ({source.name})",
                placed.width,
                placed.height,
                Gimp.ImageType.RGBA_IMAGE,
                100.0,
                Gimp.LayerMode.NORMAL,
            )
            layer.set_offsets(placed.x, placed.y)
            layer.fill(Gimp.FillType.TRANSPARENT)
            image.insert_layer(layer, source_object.get_parent(), image.get_item_position(source_object))
            local = type(target)(0, 0, placed.width, placed.height)
            _write(layer, local, pixel_format.babl_name, outcome.pixels)
    finally:
        image.undo_group_end()
    Gimp.displays_flush()
    notice = warnings_message(outcome.warnings)
    if notice is not None:  # the fill stands; GIMP shows this in its message dialog or Error Console
        Gimp.message(notice)


def _error(procedure, message: str):
    return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error(message))


def run(procedure, run_mode, image, drawables, config, data):
    if run_mode == Gimp.RunMode.INTERACTIVE:
        GimpUi.init(PROCEDURE_NAME)
        dialog = GimpUi.ProcedureDialog.new(procedure, config, "HiFill Inpaint Selection")
        dialog.fill(None)
        accepted = dialog.run()
        dialog.destroy()
        if not accepted:
            return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
    try:
        fill(image, list(drawables), _settings(config))
    except FillRefused as refused:
        return _error(procedure, f"HiFill: {refused}")
    except HiFillError as error:
        return _error(procedure, f"HiFill ({error.kind.value}): {error.message}")
    except ImportError as error:
        return _error(procedure, f"HiFill cannot load its modules ({error}); run install.py again.")
    except Exception as error:  # every failure reaches the user as a sentence, details go to stderr
        traceback.print_exc(file=sys.stderr)
        return _error(
            procedure,
            f"HiFill failed unexpectedly ({error!r}); GIMP's terminal output has the "
            "details. Nothing was changed unless a new layer appeared.",
        )
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


class HiFill(Gimp.PlugIn):
    """Registers the one procedure."""

    def do_query_procedures(self):
        return [PROCEDURE_NAME]

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run, None)
        procedure.set_image_types("RGB*")
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        procedure.set_menu_label("HiFill Inpaint Selection…")
        procedure.add_menu_path("<Image>/Filters/Enhance")
        procedure.set_documentation(
            "Fill the selection with HiFill (contextual residual aggregation)",
            "Sends the active layer's pixels around the selection to the HiFill backend and writes the "
            "fill as a new layer above it (or into the layer), as one undo step. Starts the installed "
            "backend when none is running on this computer; a backend on another machine needs the "
            "keys folder made there (python -m backend keys client NAME).",
            name,
        )
        procedure.set_attribution("HiFill for GIMP & Krita", "HiFill for GIMP & Krita", "2026")
        modes = Gimp.Choice.new()
        new_layer, in_place = OutputMode.NEW_LAYER.value, OutputMode.IN_PLACE.value
        modes.add(new_layer, 0, "New layer above", "Put the fill on a new layer above the source")
        modes.add(in_place, 1, "In place", "Write the fill into the source layer")
        procedure.add_choice_argument(
            "output-mode",
            "_Output",
            "Where the fill goes",
            modes,
            new_layer,
            GObject.ParamFlags.READWRITE,
        )
        procedure.add_int_argument(
            "context-size",
            "_Context (px, 0 = auto)",
            "Pixels of context around the selection the backend may use (0 = auto)",
            0,
            MAX_CONTEXT_PX,
            0,
            GObject.ParamFlags.READWRITE,
        )
        procedure.add_string_argument(
            "endpoint",
            "_Backend",
            "Address of the HiFill backend",
            DEFAULT_ENDPOINT,
            GObject.ParamFlags.READWRITE,
        )
        procedure.add_string_argument(
            "keys-folder",
            "_Keys folder (remote backend)",
            "Only for a backend on another machine: the folder made there by "
            "'python -m backend keys client NAME' and copied to this computer. Empty for a local backend.",
            "",
            GObject.ParamFlags.READWRITE,
        )
        return procedure


Gimp.main(HiFill.__gtype__, sys.argv)
