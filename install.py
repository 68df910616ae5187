#!/usr/bin/env python3
"""Install (or remove) the HiFill plug-ins into GIMP 3 and Krita.

    python install.py [gimp|krita|all] [--uninstall] [--dry-run] [--profile DIR]
                      [--backend-python PATH] [--vendor auto|always|never]
                      [--editor-python PATH | --python-version X.Y]

`all` (the default) installs into every editor found. Each editor module (installer/<editor>.py) finds
the editor's user folder and Python, ships the plug-in with shared_protocol, vendors pyzmq + msgpack
when the editor's Python lacks them, and records how to start the backend (this checkout's .venv
Python, `-m backend serve`). A manifest inside the plug-in folder lists exactly what was written:
reinstalling replaces only those files, --uninstall removes only those, and a file install.py did not
write is never overwritten. Standard library only.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from installer.common import InstallError, InstallOptions, default_backend_python  # noqa: E402

EDITORS = ("gimp", "krita")


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="install.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("editor", nargs="?", default="all", choices=[*EDITORS, "all"])
    parser.add_argument("--uninstall", action="store_true", help="remove what install.py installed")
    parser.add_argument("--dry-run", action="store_true", help="print what would happen, change nothing")
    parser.add_argument(
        "--profile",
        type=Path,
        help="the editor's user folder (GIMP: e.g. ~/.config/GIMP/3.0; Krita: see "
        "installer/krita.py); needs a single editor, not 'all'",
    )
    parser.add_argument(
        "--backend-python",
        type=Path,
        default=default_backend_python(),
        help="Python with the backend's dependencies (default: this checkout's .venv)",
    )
    parser.add_argument(
        "--vendor",
        choices=("auto", "always", "never"),
        default="auto",
        help="copy pyzmq + msgpack wheels into the plug-in: when the editor's Python "
        "lacks them (auto), always, or never",
    )
    which_python = parser.add_mutually_exclusive_group()
    which_python.add_argument("--editor-python", help="the editor's Python interpreter (default: found)")
    which_python.add_argument(
        "--python-version",
        help="the editor's Python version (X.Y) when it cannot "
        "be run from here; pyzmq/msgpack are then vendored",
    )
    arguments = parser.parse_args(argv)
    if arguments.profile is not None and arguments.editor == "all":
        parser.error("--profile needs an editor (gimp or krita), not 'all'")
    return arguments


def load_editor_module(name: str):
    """installer.<name>, which provides EDITOR, detect(), install() and uninstall()."""
    try:
        return importlib.import_module(f"installer.{name}")
    except ModuleNotFoundError as error:
        if error.name == f"installer.{name}":
            raise InstallError(f"This checkout has no installer for {name} (installer/{name}.py).") from error
        raise


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    options = InstallOptions(
        dry_run=arguments.dry_run,
        profile=arguments.profile,
        backend_python=arguments.backend_python.absolute(),
        vendor=arguments.vendor,
        editor_python=arguments.editor_python,
        python_version=arguments.python_version,
        log=print,
    )
    names = EDITORS if arguments.editor == "all" else (arguments.editor,)
    failures = 0
    handled = 0
    for name in names:
        try:
            module = load_editor_module(name)
            if arguments.uninstall:
                module.uninstall(options)
                handled += 1
            elif arguments.editor == "all" and not module.detect(options):
                print(f"{name}: not found, skipped")
            else:
                module.install(options)
                handled += 1
        except InstallError as error:
            print(f"{name}: {error}", file=sys.stderr)
            failures += 1
    if not arguments.uninstall and handled == 0 and failures == 0:
        print("No supported editor found (GIMP 3, Krita 5).", file=sys.stderr)
        return 1
    if arguments.dry_run:
        print("dry run: nothing was changed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
