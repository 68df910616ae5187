#!/bin/sh
# Run Krita once under a private Xvfb inside the editors root, for the end-to-end test.
#   run_krita.sh RUN_DIR TIMEOUT_S
# RUN_DIR (a path inside the root) holds home/ (the fresh profile) and job.json (read by the
# test-only driver plug-in). Exit status: Krita's, or 124 when it had to be killed.
set -eu
RUN_DIR=$1
TIMEOUT_S=$2
export HOME="$RUN_DIR/home"
export XDG_CONFIG_HOME="$HOME/.config" XDG_DATA_HOME="$HOME/.local/share" XDG_CACHE_HOME="$HOME/.cache"
export XDG_RUNTIME_DIR="$RUN_DIR/runtime" TMPDIR="$RUN_DIR/tmp" LANG=C.UTF-8
mkdir -p "$XDG_RUNTIME_DIR" "$TMPDIR" && chmod 700 "$XDG_RUNTIME_DIR"  # Krita's swap files go to TMPDIR

Xvfb -displayfd 3 -screen 0 1600x1000x24 -nolisten tcp 3>"$RUN_DIR/display" 2>"$RUN_DIR/xvfb.log" &
XVFB_PID=$!
trap 'kill "$XVFB_PID" 2>/dev/null || true' EXIT
tries=0
until [ -s "$RUN_DIR/display" ]; do
  tries=$((tries + 1))
  if [ "$tries" -gt 100 ]; then echo "Xvfb did not start" >&2; exit 3; fi
  sleep 0.1
done
export DISPLAY=":$(head -n1 "$RUN_DIR/display")"
export HIFILL_KRITA_E2E_JOB="$RUN_DIR/job.json"
status=0
echo "run_krita: start $(date +%s.%N)" >"$RUN_DIR/krita.log"
timeout --kill-after=10 "$TIMEOUT_S" krita --nosplash >>"$RUN_DIR/krita.log" 2>&1 || status=$?
echo "run_krita: exit $status $(date +%s.%N)" >>"$RUN_DIR/krita.log"
exit "$status"
