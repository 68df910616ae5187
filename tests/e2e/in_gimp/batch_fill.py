"""Runs inside real GIMP 3 (python-fu-eval batch interpreter); driven by tests/e2e/test_e2e_gimp.py.

    gimp-console-3.0 -i -n --batch-interpreter=python-fu-eval \
        -b "exec(open('.../batch_fill.py').read()); hifill_e2e('/path/job.json')" --quit

For every case of the job: load the image, prepare it (precision, grayscale, layer offset, selection),
dump the composite / source layer / selection as raw bytes, run the HiFill procedure non-interactively,
dump again, and record status, error message and the layer stack in the job's result file. The host
side compares the dumps; nothing here decides whether a case passed.
"""

import json
import os
import traceback

from gi.repository import Gegl, Gimp, Gio

PROCEDURE = "python-fu-hifill-inpaint-selection"
DUMP_FORMATS = {"u8": "R'G'B'A u8", "u16": "R'G'B'A u16", "f32": "R'G'B'A float"}


def _dump(buffer, x, y, width, height, babl_name, path):
    data = buffer.get(Gegl.Rectangle.new(x, y, width, height), 1.0, babl_name, Gegl.AbyssPolicy.NONE)
    with open(path, "wb") as handle:
        handle.write(bytes(data))


def _dump_composite(image, babl_name, path):
    duplicate = image.duplicate()
    merged = duplicate.merge_visible_layers(Gimp.MergeType.CLIP_TO_IMAGE)
    offset_x, offset_y = merged.get_offsets()[1:3]
    _dump(merged.get_buffer(), -offset_x, -offset_y, image.get_width(), image.get_height(), babl_name, path)
    duplicate.delete()


def _layers(image):
    return [
        {
            "name": layer.get_name(),
            "offsets": list(layer.get_offsets()[1:3]),
            "size": [layer.get_width(), layer.get_height()],
            "has_alpha": layer.has_alpha(),
        }
        for layer in image.get_layers()
    ]


def _prepare(image, case):
    precision = case.get("precision")
    if precision:
        image.convert_precision(getattr(Gimp.Precision, precision))
    if case.get("grayscale"):
        image.convert_grayscale()
    layer = image.get_layers()[0]
    if case.get("add_alpha"):
        layer.add_alpha()
    if case.get("layer_offset"):
        layer.set_offsets(*case["layer_offset"])
    selection = case.get("selection")
    if selection:
        kind, x, y, width, height = selection
        if kind == "rect":
            image.select_rectangle(Gimp.ChannelOps.REPLACE, x, y, width, height)
        else:
            image.select_ellipse(Gimp.ChannelOps.REPLACE, x, y, width, height)
        if case.get("feather"):
            Gimp.Selection.feather(image, case["feather"])
    else:
        Gimp.Selection.none(image)
    image.set_selected_layers([layer])
    return layer


def _run_case(case, out_dir):
    result = {"name": case["name"]}
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(case["image"]))
    try:
        source = _prepare(image, case)
        babl_name = DUMP_FORMATS[case.get("dump_dtype", "u8")]
        width, height = image.get_width(), image.get_height()
        result["canvas"] = [width, height]
        result["layers_before"] = _layers(image)
        prefix = os.path.join(out_dir, case["name"])
        _dump_composite(image, babl_name, prefix + ".composite-before.raw")
        _dump(
            source.get_buffer(),
            0,
            0,
            source.get_width(),
            source.get_height(),
            babl_name,
            prefix + ".source-before.raw",
        )
        _dump(image.get_selection().get_buffer(), 0, 0, width, height, "Y u8", prefix + ".selection.raw")

        procedure = Gimp.get_pdb().lookup_procedure(PROCEDURE)
        result["registered"] = procedure is not None
        if procedure is None:
            return result
        config = procedure.create_config()
        config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
        config.set_property("image", image)
        config.set_core_object_array("drawables", [source])
        for key, value in case.get("arguments", {}).items():
            config.set_property(key, value)
        values = procedure.run(config)
        status = values.index(0)
        result["status"] = status.value_nick
        result["message"] = ""
        if status != Gimp.PDBStatusType.SUCCESS and values.length() > 1:
            message = values.index(1)
            result["message"] = message if isinstance(message, str) else str(message)

        result["layers_after"] = _layers(image)
        _dump_composite(image, babl_name, prefix + ".composite-after.raw")
        _dump(
            source.get_buffer(),
            0,
            0,
            source.get_width(),
            source.get_height(),
            babl_name,
            prefix + ".source-after.raw",
        )
        if case.get("export_png"):
            Gimp.file_save(
                Gimp.RunMode.NONINTERACTIVE, image, Gio.File.new_for_path(case["export_png"]), None
            )
    finally:
        image.delete()
    return result


def hifill_e2e(job_path):
    with open(job_path) as handle:
        job = json.load(handle)
    results = []
    for case in job["cases"]:
        try:
            results.append(_run_case(case, job["out_dir"]))
        except Exception:
            results.append({"name": case["name"], "exception": traceback.format_exc()})
    with open(job["result_path"], "w") as handle:
        json.dump(results, handle, indent=1)
