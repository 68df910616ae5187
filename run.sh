#!/usr/bin/env bash
# HiFill for GIMP & Krita -- the two set-up commands of the README:
#   ./run.sh demo   set up (first time) and fill the bundled sample -> out/otters-filled.png
#   ./run.sh test   set up (first time) and run every test (editor end-to-end tests need root)
set -euo pipefail
cd "$(dirname "$0")"

setup() {
  # A local virtualenv with the project and its dev tools; torch is pinned to the CPU wheel.
  if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
  fi
  if [[ ! -f .venv/.installed || pyproject.toml -nt .venv/.installed ]]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[dev]'
    touch .venv/.installed
  fi
}

case "${1:-}" in
  demo)
    setup
    .venv/bin/python -m backend inpaint samples/otters.jpg samples/otters_mask.png -o out/otters-filled.png
    ;;
  test)
    setup
    .venv/bin/ruff check .
    .venv/bin/python -m pytest -q
    if [[ $(id -u) -eq 0 ]]; then
      # Real GIMP 3 and Krita in a Debian trixie root (built once, cached at $HIFILL_EDITORS_ROOT).
      tools/editors_root.sh build
      .venv/bin/python -m pytest -q -m editor tests/e2e
    else
      echo "editor end-to-end tests skipped: building the GIMP/Krita root needs root (chroot, mount)"
    fi
    ;;
  *)
    echo "usage: ./run.sh demo | test" >&2
    exit 2
    ;;
esac
