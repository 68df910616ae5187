"""`python -m backend bench`: fill latency, memory and transport of the real backend, as a plug-in sees them.

What is measured, and how:

- **Our backend** runs as a real process (`python -m backend serve` on a free loopback port) and is
  driven over ZeroMQ by `shared_protocol.Client`, exactly as the GIMP and Krita plug-ins drive it. The
  whole image and mask are sent (a plug-in may send less: the selection's box plus context).
- **Cold start**: spawn -> first `hello` answer, and spawn -> first fill result (a fill of at most
  512x512, see cold_start_case).
- **Fill time**: wall time of `Client.inpaint` (local checks, send, queue, CRA fill, reply, decode);
  median of N warm runs per case.
- **Memory**: VmHWM (peak resident set) of the backend process from /proc. Before each case the peak is
  reset through /proc/PID/clear_refs, so each case reports its own peak; where the kernel refuses the
  reset the peaks are cumulative and the report says so. VmRSS after the case is reported as well.
- **Transport**: an 8K RGBA u8 image with an empty mask: the backend receives and checks the whole
  request, scans the mask and answers with a 0x0 region. Compared with a plain numpy copy of the same
  bytes (image + mask) into already-allocated memory.
- **--compare**: OpenCV Telea and Navier-Stokes (`cv2.inpaint`, radius 3) and PatchMatch
  (`patchmatch_cython.inpaint_pyramid`) on the same images and holes, each method and case in a child
  process of its own, so its peak RSS is its own. A per-run time cap stops methods that would take far
  too long; they are reported as '> cap', and larger cases of a capped method are skipped.
- **GPU**: when torch sees CUDA, the same cases through the in-process engine in fp16 and fp32 (device
  name, median times); otherwise the report says the section was skipped and why.

Cases are an upscaled photo (samples/otters.jpg; a procedural texture if it is missing) with one
blob-shaped hole (a union of ellipses) scaled to the requested share of the image.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from backend.options import add_engine_options
from lab.bench.cases import (
    DEFAULT_IMAGE,
    DEFAULT_OUT,
    DEFAULT_SIZES,
    METHOD_TITLES,
    OURS,
    PEERS,
    BenchError,
    BenchSettings,
    Case,
    CaseData,
    build_cases,
    parse_size,
)
from lab.bench.measure import Measurement, paused
from lab.bench.ours import (
    BackendProcess,
    measure_transport,
    run_gpu_section,
    run_ours,
    serve_command,
)
from lab.bench.peers import peer_available, run_peer
from lab.bench.report import (
    describe_image,
    git_commit,
    machine_description,
    package_version,
    plot_scaling,
    render_markdown,
    target_table,
)
from shared_protocol import Client
from shared_protocol.endpoints import free_loopback_endpoint

# ------------------------------------------------------------------------------------------------ run


def cold_start_case(cases: Sequence[Case]) -> Case:
    """The fill that ends the cold start: the smallest case if it is at most 512x512, else 512x512 10%.

    A fixed small fill keeps cold starts of different runs comparable (a first 8K fill would mostly
    measure the fill).
    """
    smallest = min(cases, key=lambda case: (case.pixels, case.hole_percent))
    return smallest if smallest.pixels <= 512 * 512 else Case("512x512", 512, 512, 10.0)


def run_bench(settings: BenchSettings) -> dict[str, Any]:
    """Measure everything, return the report (as plain data, also what bench.json holds)."""
    settings.out.mkdir(parents=True, exist_ok=True)
    data = CaseData(settings.image)
    transport_runs = 2 * settings.repeats if settings.transport else 0  # shared memory, then frames
    total = len(settings.cases) * settings.repeats * (1 + (len(settings.peers) if settings.compare else 0))
    report: dict[str, Any] = {
        "schema": 1,
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "commit": git_commit(),
        "command": settings.command,
        "machine": machine_description(),
        "settings": {
            "repeats": settings.repeats,
            "compare": settings.compare,
            "peers": list(settings.peers) if settings.compare else [],
            "cap_s": settings.cap_s,
            "image": describe_image(settings.image),
            "paused": settings.paused,
            "endpoint_kind": "tcp loopback",
            "patchmatch_version": package_version("patchmatch-cython"),
            "opencv_version": package_version("opencv-python-headless"),
        },
        "cases": [],
        "results": [],
    }
    with tqdm(
        total=total + transport_runs,
        desc="bench",
        unit="run",
        disable=not settings.progress,
        dynamic_ncols=True,
    ) as bar:

        def tick() -> None:
            bar.update()

        endpoint = free_loopback_endpoint()
        command = serve_command(
            endpoint,
            settings.weights,
            settings.device,
            settings.precision,
            settings.allow_untrained,
            settings.working_size,
        )
        backend = BackendProcess(command, endpoint, settings.out / "backend.log")
        client = Client(endpoint, timeout_s=1800.0, connect_timeout_s=0.5, inactivity_timeout_s=60.0)
        try:
            first = cold_start_case(settings.cases)
            bar.set_postfix_str("backend cold start")
            data.image(first.width, first.height)  # image and mask are made before the clock starts
            data.mask(first)
            backend.start()
            report["backend"] = backend.wait_until_ready(client, timeout_s=600.0)
            hello_s = time.perf_counter() - backend.spawned_at
            client.inpaint(
                data.image(first.width, first.height), first.width, first.height, 3, "u8", data.mask(first)
            )
            report["cold_start"] = {
                "spawn_to_hello_s": hello_s,
                "spawn_to_first_result_s": time.perf_counter() - backend.spawned_at,
                "first_case": first.key,
                "peak_rss_bytes": backend.memory().get("VmHWM"),
                "backend_pid": backend.pid,
            }
            for case in settings.cases:
                bar.set_postfix_str(f"{METHOD_TITLES[OURS]}: {case.key}")
                report["cases"].append({**asdict(case), "key": case.key, "hole_share": data.hole_share(case)})
                report["results"].append(
                    run_ours(client, backend, case, data, settings.repeats, tick).to_dict()
                )
            if settings.transport:
                label, width, height = settings.transport
                bar.set_postfix_str(f"transport {label}")
                report["transport"] = measure_transport(
                    client, backend, width, height, data, settings.repeats, tick
                )
        finally:
            client.close()
            backend.stop()
        if settings.compare:
            report["results"] += _run_peers(settings, data, bar)
    report["gpu"] = run_gpu_section(settings, data)
    report["targets"] = target_table(report)
    report["load_at_end"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return report


def _run_peers(settings: BenchSettings, data: CaseData, bar: tqdm) -> list[dict[str, Any]]:
    results = []
    capped_at: dict[str, list[Case]] = {method: [] for method in settings.peers}
    with tempfile.TemporaryDirectory(prefix="hifill-bench-") as scratch:
        for case in settings.cases:
            image_path = Path(scratch) / f"image-{case.width}x{case.height}.npy"
            if not image_path.exists():
                np.save(image_path, data.image(case.width, case.height))
            mask_path = Path(scratch) / "mask.npy"
            np.save(mask_path, data.mask(case))
            hole = 100.0 * data.hole_share(case)
            for method in settings.peers:
                bar.set_postfix_str(f"{METHOD_TITLES[method]}: {case.key}")
                before = bar.n
                missing = peer_available(method)
                smaller = [
                    done
                    for done in capped_at[method]
                    if done.pixels <= case.pixels and done.hole_percent <= case.hole_percent
                ]
                if missing or smaller:
                    result = Measurement(
                        method, case.key, case.width, case.height, hole, cap_s=settings.cap_s
                    )
                    if missing:
                        result.error = missing
                    else:
                        result.skipped = f"> cap at {smaller[0].key}"
                else:
                    result = run_peer(
                        method,
                        case,
                        hole,
                        image_path,
                        mask_path,
                        settings.repeats,
                        settings.cap_s,
                        bar.update,
                    )
                    if result.capped:
                        capped_at[method].append(case)
                bar.update(settings.repeats - (bar.n - before))
                results.append(result.to_dict())
    return results


# ------------------------------------------------------------------------------------------------ CLI


def _holes(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of percentages such as 5,10,25.") from None
    if not values or any(not 0 < value < 100 for value in values):
        raise argparse.ArgumentTypeError("Hole shares are percentages between 0 and 100, e.g. 5,10,25.")
    return values


def _sizes(text: str) -> list[str]:
    sizes = [part.strip() for part in text.split(",") if part.strip()]
    for size in sizes:
        parse_size(size)
    if not sizes:
        raise argparse.ArgumentTypeError("Give at least one size, e.g. 512,2k,4k,8k.")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m backend bench",
        description="Measure fill time, memory and transport of the HiFill backend through ZeroMQ "
        "(and, with --compare, of OpenCV and PatchMatch on the same cases).",
    )
    parser.add_argument("--compare", action="store_true", help="also run OpenCV Telea/NS and PatchMatch")
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=list(DEFAULT_SIZES),
        help="comma-separated sizes: 512, 2k (2048x1080), 4k (3840x2160), 8k (7680x4320), N or WxH",
    )
    parser.add_argument(
        "--holes",
        type=_holes,
        default=None,
        help="hole shares in %% for every size (default: 10, 25 at 8K; with --compare 5,10,25)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median reported)")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--plot", type=Path, default=None, help="scaling plot (default OUT/bench-scaling.png)"
    )
    add_engine_options(parser)
    parser.add_argument(
        "--transport",
        default="8k",
        help="size of the RGBA u8 transport measure (default 8k; 'none' skips it)",
    )
    parser.add_argument("--cap", type=float, default=120.0, help="time cap per run of a compared method, s")
    parser.add_argument(
        "--methods",
        default=",".join(PEERS),
        help=f"compared methods for --compare (default {','.join(PEERS)})",
    )
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="photo the cases are made from")
    parser.add_argument(
        "--pause-pid",
        type=int,
        default=None,
        help="SIGSTOP this process (e.g. a training run) during the bench and SIGCONT it afterwards",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python -m backend bench [--compare] [--sizes ...] [--holes ...] [--repeats N] [--out DIR]`.

    Prints the markdown table and writes OUT/bench.md, OUT/bench.json and the scaling plot. Returns 0,
    or 1 when the bench cannot run (the reason on stderr), 2 for bad arguments.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        argv = argv[1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if not args.cap > 0:
        parser.error("--cap must be positive")
    peers = tuple(name.strip() for name in args.methods.split(",") if name.strip())
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    transport = None
    if args.transport.lower() != "none":
        try:
            transport = parse_size(args.transport)
        except argparse.ArgumentTypeError as error:
            parser.error(str(error))
    same_names = ("repeats", "compare", "weights", "device", "precision", "allow_untrained", "working_size")
    settings = BenchSettings(
        cases=build_cases(args.sizes, args.holes, args.compare),
        peers=peers,
        cap_s=args.cap,
        transport=transport,
        image=args.image,
        out=args.out,
        progress=not args.no_progress,
        command="python -m backend bench " + " ".join(argv),
        **{name: getattr(args, name) for name in same_names},
    )
    try:
        with paused(args.pause_pid) as stopped:
            if stopped:
                settings.paused = f"process {args.pause_pid}" + (
                    f" and {len(stopped) - 1} child process(es)" if len(stopped) > 1 else ""
                )
            report = run_bench(settings)
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    markdown = render_markdown(report)
    settings.out.mkdir(parents=True, exist_ok=True)
    (settings.out / "bench.md").write_text(markdown, encoding="utf-8")
    (settings.out / "bench.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    plot_scaling(report, args.plot or settings.out / "bench-scaling.png")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
