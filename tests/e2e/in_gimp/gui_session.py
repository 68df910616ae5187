"""Runs inside the real GIMP 3 GUI (under Xvfb) as a python-fu-eval batch command; driven by
tests/e2e/test_e2e_gimp.py, which watches the marker files and presses keys with xdotool.

    gimp-3.0 -n --batch-interpreter=python-fu-eval \
        -b "exec(open('.../gui_session.py').read()); hifill_gui('/path/job.json')"

Steps (each announced by writing <out_dir>/<step>.json, each waiting for <out_dir>/<step>.done):
  1. open the image in a window, select a rectangle, run HiFill non-interactively (so GIMP stores the
     arguments as the procedure's last values), write "filled"; the host presses Ctrl+Z once;
     record what one undo left: "undone".
  2. run HiFill interactively: GIMP shows the procedure's dialog (pre-filled with the last values);
     the host takes a screenshot and presses Return; record the result: "interactive".
The host takes the result screenshot after step 2 and then closes GIMP.
"""

import json
import os
import time

from gi.repository import Gimp, Gio

PROCEDURE = "python-fu-hifill-inpaint-selection"


def _announce(out_dir, step, payload):
    path = os.path.join(out_dir, step + ".json")
    with open(path + ".tmp", "w") as handle:
        json.dump(payload, handle)
    os.replace(path + ".tmp", path)


def _wait_for(out_dir, step, timeout_s=120.0):
    deadline = time.monotonic() + timeout_s
    marker = os.path.join(out_dir, step + ".done")
    while not os.path.exists(marker):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the host did not finish step {step}")
        time.sleep(0.1)


def _state(image):
    layers = [layer.get_name() for layer in image.get_layers()]
    bounds = Gimp.Selection.bounds(image)
    return {"layers": layers, "selection": list(bounds[1:6])}


def _run(image, layer, run_mode, arguments):
    procedure = Gimp.get_pdb().lookup_procedure(PROCEDURE)
    config = procedure.create_config()
    config.set_property("run-mode", run_mode)
    config.set_property("image", image)
    config.set_core_object_array("drawables", [layer])
    for key, value in arguments.items():
        config.set_property(key, value)
    values = procedure.run(config)
    status = values.index(0)
    message = values.index(1) if status != Gimp.PDBStatusType.SUCCESS and values.length() > 1 else ""
    return {"status": status.value_nick, "message": str(message)}


def _select(image, selection):
    """A rectangle [x, y, w, h], or {"mask": path}: the opaque pixels of a PNG of the image's size (as
    a user's free selection around an object; Layer > Transparency > Alpha to Selection, not undoable)."""
    if isinstance(selection, dict):
        image.undo_disable()
        mask_file = Gio.File.new_for_path(selection["mask"])
        shape = Gimp.file_load_layer(Gimp.RunMode.NONINTERACTIVE, image, mask_file)
        image.insert_layer(shape, None, 0)
        image.select_item(Gimp.ChannelOps.REPLACE, shape)
        image.remove_layer(shape)
        image.undo_enable()
    else:
        image.select_rectangle(Gimp.ChannelOps.REPLACE, *selection)


def hifill_gui(job_path):
    with open(job_path) as handle:
        job = json.load(handle)
    out_dir = job["out_dir"]
    try:
        image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(job["image"]))
        Gimp.Display.new(image)
        Gimp.displays_flush()
        layer = image.get_layers()[0]
        _select(image, job["selection"])
        before = _state(image)

        outcome = _run(image, layer, Gimp.RunMode.NONINTERACTIVE, job["arguments"])
        Gimp.displays_flush()
        _announce(out_dir, "filled", dict(outcome, before=before, after=_state(image)))
        _wait_for(out_dir, "filled")
        _announce(out_dir, "undone", _state(image))
        _wait_for(out_dir, "undone")

        outcome = _run(image, layer, Gimp.RunMode.INTERACTIVE, {})
        Gimp.displays_flush()
        _announce(out_dir, "interactive", dict(outcome, after=_state(image)))
    except Exception as error:  # reported to the host, which fails the test with it
        _announce(out_dir, "error", {"error": repr(error)})
