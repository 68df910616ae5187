"""CRA invariants: bit-exact outside the mask, equality with an explicit per-patch loop, any size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backend import cra, texture
from backend.engine import FillOptions
from backend.inference import load_engine
from backend.weights import write_untrained_weights
from shared_protocol import ErrorKind, HiFillError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    path = write_untrained_weights(tmp_path_factory.mktemp("w") / "untrained.safetensors")
    return load_engine(path, device="cpu", allow_untrained=True)


def photo_like(h: int, w: int, channels: int, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus texture, so residuals are not trivially zero."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([(np.sin(x / 37) + 1) / 2, (np.cos(y / 23) + 1) / 2, ((x + y) % 97) / 97], -1)
    values = np.clip(base * 0.8 + rng.random((h, w, 3)) * 0.2, 0, 1)
    if channels == 4:
        values = np.concatenate([values, rng.random((h, w, 1))], -1)
    if dtype == np.float32:
        return values.astype(np.float32)
    top = np.iinfo(dtype).max
    return np.rint(values * top).astype(dtype)


def several_holes(h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[h // 5 : h // 5 + h // 6, w // 7 : w // 7 + w // 9] = 255  # hard rectangle
    yy, xx = np.mgrid[0:h, 0:w]
    blob = ((yy - 0.7 * h) / (0.08 * h)) ** 2 + ((xx - 0.6 * w) / (0.05 * w)) ** 2
    mask[blob < 1] = 255
    mask[(blob >= 1) & (blob < 1.6)] = 90  # soft (feathered) rim
    mask[h - 3 :, w - 20 :] = 255  # touching the image edge
    return mask


def apply(image: np.ndarray, result) -> np.ndarray:
    out = image.copy()
    h, w = result.pixels.shape[:2]
    out[result.y : result.y + h, result.x : result.x + w] = result.pixels
    return out


@pytest.mark.parametrize(
    ("h", "w", "channels", "dtype"),
    [(777, 1001, 3, np.uint8), (500, 8000, 4, np.uint8), (301, 257, 4, np.uint16), (200, 333, 3, np.float32)],
)
def test_pixels_outside_the_mask_are_bit_exact_and_alpha_untouched(engine, h, w, channels, dtype):
    image = photo_like(h, w, channels, dtype)
    mask = several_holes(h, w)
    result = engine.fill(image, mask)
    assert result.pixels.dtype == image.dtype
    out = apply(image, result)
    assert np.array_equal(out[mask == 0], image[mask == 0])
    if channels == 4:
        assert np.array_equal(out[..., 3], image[..., 3])
    changed = np.any(out[..., :3] != image[..., :3], axis=-1)
    assert changed[mask == 255].mean() > 0.5  # the hole was actually filled


def test_empty_mask_returns_the_input(engine):
    image = photo_like(64, 80, 3)
    result = engine.fill(image, np.zeros((64, 80), np.uint8))
    assert result.pixels.shape[:2] == (0, 0)
    assert np.array_equal(apply(image, result), image)


def test_bad_input_is_refused_with_a_clear_error(engine):
    with pytest.raises(HiFillError) as err:
        engine.fill(np.zeros((10, 10, 2), np.uint8), np.zeros((10, 10), np.uint8))
    assert err.value.kind is ErrorKind.BAD_REQUEST
    with pytest.raises(HiFillError, match="mask"):
        engine.fill(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 11), np.uint8))


def test_cancel_between_stages_raises_cancelled(engine):
    image = photo_like(300, 300, 3)
    mask = several_holes(300, 300)
    with pytest.raises(HiFillError) as err:
        engine.fill(image, mask, FillOptions(), is_cancelled=lambda: True)
    assert err.value.kind is ErrorKind.CANCELLED


def test_upsample_rows_equals_torch_bilinear():
    low = torch.rand(3, 24, 40)
    full = F.interpolate(low[None], size=(100, 173), mode="bilinear", align_corners=False)[0]
    for r0, r1 in [(0, 7), (33, 71), (90, 100)]:
        torch.testing.assert_close(
            cra.upsample_rows(low, (100, 173), r0, r1), full[:, r0:r1], atol=1e-5, rtol=0
        )


def test_mirror_indices_reflect_at_both_edges():
    assert cra.mirror_indices(-3, 9, 5).tolist() == [2, 1, 0, 0, 1, 2, 3, 4, 4]


def test_windows_follow_the_holes():
    mask = np.zeros((4320, 7680), np.uint8)
    mask[1000:1200, 2000:2200] = 255  # a 200x200 hole in 8K
    (window,) = cra.plan_windows(mask)
    assert window.height * window.width < 800 * 800  # small window, not the whole image
    assert window.top <= 1000 and window.top + window.height >= 1200
    mask[4000:4100, 7000:7100] = 255  # far away: its own window
    assert len(cra.plan_windows(mask)) == 2
    mask[1210:1250, 2210:2250] = 255  # close to the first: merged with it
    assert len(cra.plan_windows(mask)) == 2
    for window in cra.plan_windows(mask):
        assert window.top >= 0 and window.top + window.height <= 4320
        assert window.left >= 0 and window.left + window.width <= 7680


def test_context_option_sets_the_margin():
    mask = np.zeros((2000, 2000), np.uint8)
    mask[900:1000, 900:1000] = 255
    (small,) = cra.plan_windows(mask, context_px=50)
    (large,) = cra.plan_windows(mask, context_px=600)
    assert small.height < 300 and large.height > 1200


def reference_cra(image, mask, window, fill_fn, scores):
    """CRA written out plainly: whole window in float, a loop over hole cells and source cells (Eq. 4)."""
    h, w = mask.shape
    rows = cra.mirror_indices(window.top, window.height, h)
    cols = cra.mirror_indices(window.left, window.width, w)
    pixels = image[rows][:, cols, :3].astype(np.float64) / 255.0  # (Hw, Ww, 3)
    hole = mask[rows][:, cols] > 0
    k = window.cell_h // cra.CELL_DOWNSCALE  # full-res pixels per low-res pixel (exact here)
    lh, lw = window.low_res
    low = pixels.reshape(lh, k, lw, k, 3).mean(axis=(1, 3))
    hole_low = hole.reshape(lh, k, lw, k).any(axis=(1, 3)).astype(np.float64)
    fill = fill_fn(low * 2 - 1)
    fill = (fill + 1) / 2
    fill_low = fill * hole_low[..., None] + low * (1 - hole_low[..., None])

    def up(a):
        t = torch.from_numpy(a.transpose(2, 0, 1)).float()[None]
        return F.interpolate(t, size=pixels.shape[:2], mode="bilinear", align_corners=False)[0].double()

    residual = pixels - up(low).numpy().transpose(1, 2, 0)
    out = up(fill_low).numpy().transpose(1, 2, 0)
    gh, gw, ch, cw = window.grid_h, window.grid_w, window.cell_h, window.cell_w
    cell_hole = hole.reshape(gh, ch, gw, cw).any(axis=(1, 3))
    near_hole = np.zeros_like(cell_hole)
    for y in range(gh):
        for x in range(gw):
            near_hole[y, x] = cell_hole[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2].any()
    for j in range(gh * gw):
        yj, xj = divmod(j, gw)
        if not cell_hole[yj, xj]:
            continue
        acc, total = np.zeros((ch, cw, 3)), 0.0
        for i in range(gh * gw):
            yi, xi = divmod(i, gw)
            if near_hole[yi, xi]:
                continue
            acc += scores[j, i] * residual[yi * ch : (yi + 1) * ch, xi * cw : (xi + 1) * cw]
            total += scores[j, i]
        out[yj * ch : (yj + 1) * ch, xj * cw : (xj + 1) * cw] += acc / total
    out = np.clip(out, 0, 1)
    expected = image.copy()
    alpha = mask.astype(np.float64) / 255
    for wy, iy in enumerate(range(window.top, window.top + window.height)):
        if not 0 <= iy < h:
            continue
        for wx, ix in enumerate(range(window.left, window.left + window.width)):
            if 0 <= ix < w and mask[iy, ix] > 0:
                orig = image[iy, ix, :3] / 255.0
                value = orig + (out[wy, wx] - orig) * alpha[iy, ix]
                expected[iy, ix, :3] = np.clip(np.rint(value * 255), 0, 255)
    return expected


def test_residual_aggregation_equals_an_explicit_per_patch_loop():
    image = photo_like(100, 150, 4, seed=3)
    mask = np.zeros((100, 150), np.uint8)
    mask[30:60, 50:90] = 255
    mask[60:66, 50:90] = 128  # soft edge
    window = cra.Window(top=-14, left=-5, grid_h=4, grid_w=5, cell_h=32, cell_w=32)  # mirrored edges
    rng = np.random.default_rng(7)
    scores = rng.random((20, 20))

    def fill_fn(low_in):  # a deterministic stand-in for the generator, (h, w, 3) in [-1, 1]
        return np.tanh(low_in * 1.5 + 0.2)

    def fake_generator(image_t, hole_t):
        out = torch.from_numpy(fill_fn(image_t[0].permute(1, 2, 0).double().numpy()).transpose(2, 0, 1))
        return out.float()[None], torch.from_numpy(scores).float()[None]

    region = image.copy()
    cra.fill_window(image, mask, window, fake_generator, region, (0, 0))
    expected = reference_cra(image, mask, window, fill_fn, scores)
    difference = np.abs(region.astype(int) - expected.astype(int))
    assert difference.max() <= 1  # float32 vs float64 rounding at most one level
    assert (difference == 0).mean() > 0.999
    assert np.array_equal(region[mask == 0], image[mask == 0])


def test_weights_errors_are_clear(tmp_path: Path):
    with pytest.raises(HiFillError) as err:
        load_engine(tmp_path / "missing.safetensors")
    assert err.value.kind is ErrorKind.NO_WEIGHTS and "python -m backend train" in err.value.message
    untrained = write_untrained_weights(tmp_path / "u.safetensors")
    with pytest.raises(HiFillError, match="untrained"):
        load_engine(untrained)
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(untrained.read_bytes()[:5000])
    with pytest.raises(HiFillError, match="corrupt or truncated"):
        load_engine(truncated)


def test_host_tensors_stay_unpinned_and_uncopied_on_cpu():
    from backend.inference import to_device

    tensor = torch.rand(1, 3, 16, 16)
    moved = to_device(tensor, torch.device("cpu"))
    assert moved is tensor and not moved.is_pinned()  # pinning is only ever asked for on CUDA


def test_compile_failure_logs_a_warning_and_falls_back_to_the_same_eager_results(
    tmp_path, caplog, monkeypatch
):
    import torch._inductor.config as inductor_config

    from backend.inference import TorchInpaintEngine

    path = write_untrained_weights(tmp_path / "untrained.safetensors")
    engine = TorchInpaintEngine.load(path, device="cpu", allow_untrained=True, warm_up=False)
    image, hole = torch.rand(1, 3, 64, 64) * 2 - 1, torch.zeros(1, 1, 64, 64)
    hole[:, :, 16:40, 20:48] = 1
    eager = engine.run_generator(image, hole)
    monkeypatch.setattr(inductor_config.cpp, "cxx", (str(tmp_path / "no-such-c++"),))  # a real failure
    with caplog.at_level("WARNING", logger="hifill.engine"):
        assert engine.compile(side=64) is False
    assert any("torch.compile of the generator failed" in r.getMessage() for r in caplog.records)
    assert engine.describe()["compiled"] is False and engine.generator is engine.eager_generator
    again = engine.run_generator(image, hole)
    assert torch.equal(again[0], eager[0]) and torch.equal(again[1], eager[1])


def test_the_patch_path_runs_the_refine_stage_only_where_it_counts():
    """Weights that start from a prefill: the patch path stops after the coarse stage (its refine
    stage's changes are lost under the fill's blur: backend.texture); the attention path needs the
    stage's scores, and weights without a prefill paint the hole in it."""
    from backend.weights import DEFAULT_WEIGHTS

    image = photo_like(96, 128, 3)
    mask = np.zeros((96, 128), np.uint8)
    mask[30:60, 40:90] = 255
    for weights, detail, expected in (
        (DEFAULT_WEIGHTS, "patch", False),
        (DEFAULT_WEIGHTS, "attention", True),
    ):
        engine = load_engine(weights, device="cpu", detail=detail, working_size=128)
        calls: list[int] = []
        first_refine_layer = engine.generator.refine["re_en_down_256"]
        handle = first_refine_layer.register_forward_hook(lambda *_, calls=calls: calls.append(1))
        try:
            engine.fill(image, mask)
        finally:
            handle.remove()
        assert bool(calls) is expected and engine.refine_stage is expected
        assert engine.describe()["stages"] == ("coarse + refine" if expected else "coarse")


def test_without_a_prefill_the_patch_path_keeps_the_refine_stage(engine):
    from backend.inference import TEXTURE_MODES, TorchInpaintEngine

    patch = TorchInpaintEngine(
        engine.eager_generator,
        engine.config,
        engine.weights_path,
        engine.device,
        None,
        128,
        TEXTURE_MODES["patch"],
    )
    assert engine.eager_generator.prefill == "none" and patch.refine_stage


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_unit_float_conversion_equals_numpy_on_strided_views(dtype):
    from backend.cra import to_unit_float

    rng = np.random.default_rng(4)
    top = {np.uint8: 255, np.uint16: 65535}.get(dtype)
    shape = (37, 53, 4)
    pixels = rng.integers(0, top + 1, shape).astype(dtype) if top else rng.random(shape, np.float32)
    view = pixels[3:30, 5:50, :3].transpose(2, 0, 1)  # strided, as the window reader passes it
    expected = view.astype(np.float32) * np.float32(1.0 / top) if top else view
    out = np.empty(view.shape, np.float32)
    assert np.array_equal(to_unit_float(view, out), expected) and np.array_equal(out, expected)
    assert np.array_equal(to_unit_float(view), expected)


def test_composing_in_narrow_bands_gives_the_same_fill(engine, monkeypatch):
    """Each band of the composed fill covers its own hole columns (compose_window_texture): bands of a
    few rows, some with no hole at all, give the fill of one band, pixel for pixel."""
    image = photo_like(96, 120, 4, np.uint16, seed=3)
    yy, xx = np.mgrid[0:96, 0:120]
    diamond = np.abs(yy - 28) + np.abs(xx - 100) < 22  # runs off the right edge
    lower = np.abs(yy - 75) + np.abs(xx - 40) < 14  # rows 62-88: rows 50-61 have no hole
    mask = np.where(diamond | lower, 255, 0).astype(np.uint8)
    mask[(np.abs(yy - 75) + np.abs(xx - 40)) == 13] = 128  # a soft edge
    whole = engine.fill(image, mask)
    monkeypatch.setattr(cra, "TEXTURE_BAND_PIXELS", 300)  # bands of 2-4 rows
    banded = engine.fill(image, mask)
    assert (whole.x, whole.y) == (banded.x, banded.y)
    assert np.array_equal(whole.pixels, banded.pixels)
    assert not np.array_equal(apply(image, whole), image)  # something was filled


def test_a_read_only_image_converts_without_a_warning():
    """Images unpacked from a message are read-only buffers: reading them must not warn in the log.
    In a process of its own: torch gives this warning once per process, so another test could have
    used it up."""
    import subprocess
    import sys

    script = (
        "import numpy as np\n"
        "from backend.cra import to_unit_float\n"
        "pixels = np.frombuffer(bytes(range(256)) * 3, np.uint8).reshape(16, 16, 3)\n"
        "assert not pixels.flags.writeable\n"
        "assert np.array_equal(to_unit_float(pixels), pixels.astype(np.float32) * np.float32(1 / 255))\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("channels", [3, 4])
def test_pixels_at_equals_indexing_the_mirrored_window_contiguous_or_not(channels):
    image = photo_like(37, 53, channels, np.uint16)
    window = cra.Window(top=-5, left=40, grid_h=3, grid_w=2, cell_h=16, cell_w=16)  # past two edges
    ys = np.array([0, 3, 47, 20, 5])
    xs = np.array([0, 31, 12, 2, 30])
    for picture in (image, np.asfortranarray(image)):
        reader = cra.WindowReader(picture, np.zeros(picture.shape[:2], np.uint8), window)
        expected = np.stack([image[reader.rows[y], reader.cols[x], :3] for y, x in zip(ys, xs, strict=True)])
        got = reader.pixels_at(ys, xs)
        assert got.dtype == image.dtype and np.array_equal(got, expected)


def test_upsample_box_equals_torch_bilinear_on_any_box():
    torch.manual_seed(0)
    image = torch.rand(3, 13, 17)
    for scale in (2, 4):
        full = F.interpolate(image[None], scale_factor=scale, mode="bilinear", align_corners=False)[0]
        for top, bottom, left, right in (
            (0, 13 * scale, 0, 17 * scale),
            (5, 20, 7, 25),
            (0, 3, 17 * scale - 8, 17 * scale),
        ):
            box = texture.upsample_box(image, scale, (top, bottom, left, right))
            assert torch.allclose(box, full[:, top:bottom, left:right], atol=1e-6)


@pytest.mark.parametrize("scaled", [False, True])
def test_the_seam_touches_only_hole_pixels_near_the_border(engine, monkeypatch, scaled: bool):
    """Full-resolution and scaled (large boxes) seams: outside the mask bit-exact, inside changed only
    within the seam's reaches (plus its blur) of the border."""
    from backend.texture import SEAM_REACHES, TextureConfig

    image = photo_like(240, 320, 3)
    mask = np.zeros((240, 320), np.uint8)
    mask[40:200, 60:280] = 255
    if scaled:
        monkeypatch.setattr(cra, "SEAM_FULL_PIXELS", 5_000)
        monkeypatch.setattr(cra, "SEAM_SCALED_PIXELS", 3_000)
    plain = TextureConfig(seam_share=0.0)
    seamed = TextureConfig(seam_share=1.0, seam_reach=6.0, seam_sigma=2.0)
    saved = engine.texture
    try:
        engine.texture = plain
        without = apply(image, engine.fill(image, mask))
        engine.texture = seamed
        with_seam = apply(image, engine.fill(image, mask))
    finally:
        engine.texture = saved
    assert np.array_equal(with_seam[mask == 0], image[mask == 0])
    changed = np.any(with_seam != without, axis=-1)
    assert changed.any()
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(mask > 0)
    reach = SEAM_REACHES * 6.0 + 6 * 2.0 + (8 if scaled else 0)  # the band, its blur, a scaled pixel
    assert distance[changed].max() <= reach


def test_a_fill_calls_no_opencv_function_but_its_serial_inpainting(engine, monkeypatch):
    """OpenCV functions that run on its thread pool (distanceTransform, resize, GaussianBlur, ...) made
    every later torch parallel region in the process ~10x slower (a 512² fill 4.9 s instead of 0.3 s):
    the fill may use cv2.inpaint (serial) and constants only."""
    import sys
    import types

    import cv2

    called: set[str] = set()

    class Recording(types.ModuleType):
        def __getattr__(self, name: str):
            value = getattr(cv2, name)
            if callable(value) and not name.isupper():
                called.add(name)
            return value

    monkeypatch.setitem(sys.modules, "cv2", Recording("cv2"))
    image = photo_like(200, 260, 3)
    mask = np.zeros((200, 260), np.uint8)
    mask[50:150, 60:200] = 255
    engine.fill(image, mask)
    assert called == {"inpaint"}
