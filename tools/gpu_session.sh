#!/usr/bin/env bash
# One prepared call on a lent GPU machine (at most 10 minutes, nothing reachable from it): train, then run
# the unit tests and the benchmark on the GPU; everything that should come back is written under $OUT.
#
#   here, once:  python -m backend build-datapack          (data/train-pack.safetensors, ~28 MB, ignored)
#                pip download ... pyzmq -d .whl             (README "On a GPU machine": the one package the
#                                                            device image lacks; .whl/ is ignored)
#   there:       OUT=... tools/gpu_session.sh               (carry data/train-pack.safetensors and .whl)
#
# Settings (environment): DEVICE (cuda), DATAPACK (data/train-pack.safetensors), INIT (the committed
# training state; INIT='' a fresh run), TRAIN_MINUTES (4.5; 0 skips training), BATCH (32), SIZE (256),
# TEST_SECONDS (150; 0 skips the tests), BENCH_SIZES (512,2k,4k,8k; empty skips the benchmark), PYTHON (python3), TRAIN_ARGS
# (more train options, e.g. "--perceptual-weight 0.01": then carry data/vgg16-hed.safetensors too).
# A CPU dry run of the whole path (tests/process/test_gpu_session.py runs a smaller one):
#   OUT=/tmp/gpu-dry DEVICE=cpu TRAIN_MINUTES=0.5 BATCH=2 SIZE=64 TEST_SECONDS=0 BENCH_SIZES=256 \
#     tools/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder whose files come back}"
DEVICE=${DEVICE:-cuda}
DATAPACK=${DATAPACK:-data/train-pack.safetensors}
INIT=${INIT-lab/state/training-state.safetensors}  # set but empty: a fresh run
TRAIN_MINUTES=${TRAIN_MINUTES:-4.5}
BATCH=${BATCH:-32}
SIZE=${SIZE:-256}
TEST_SECONDS=${TEST_SECONDS:-150}
BENCH_SIZES=${BENCH_SIZES-512,2k,4k,8k}
PYTHON=${PYTHON:-python3}
read -r -a train_args <<<"${TRAIN_ARGS:-}"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
status=0

if compgen -G ".whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
{ nvidia-smi 2>&1 || true; "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } \
  >"$OUT/machine.txt" 2>&1

if [[ $TRAIN_MINUTES != 0 ]]; then
  echo "== training ($TRAIN_MINUTES min, batch $BATCH, size $SIZE, $DEVICE)"
  "$PYTHON" -m backend train --datapack "$DATAPACK" --init "$INIT" --device "$DEVICE" --run "$OUT/run" \
    --export "$OUT/run/generator.safetensors" --commit-state "$OUT/run/training-state.safetensors" \
    --size "$SIZE" --batch "$BATCH" --minutes "$TRAIN_MINUTES" --save-minutes 2 --health-every 100 \
    "${train_args[@]}" >"$OUT/train.log" 2>&1 || status=1
  tr '\r' '\n' <"$OUT/train.log" | grep -v "step/s" | tail -n 4
fi

if [[ $TEST_SECONDS != 0 ]]; then
  echo "== unit tests (at most $TEST_SECONDS s)"
  timeout "$TEST_SECONDS" "$PYTHON" -m pytest -q -x -p no:cacheprovider tests/unit >"$OUT/tests.log" 2>&1 || status=1
  tail -n 3 "$OUT/tests.log"
fi

if [[ -n $BENCH_SIZES ]]; then
  echo "== benchmark ($BENCH_SIZES, $DEVICE)"
  "$PYTHON" -m backend bench --device "$DEVICE" --sizes "$BENCH_SIZES" --repeats 3 --out "$OUT/bench" \
    --no-progress >"$OUT/bench.log" 2>&1 || status=1
  grep -A 12 "^## Targets" "$OUT/bench/bench.md" 2>/dev/null || tail -n 5 "$OUT/bench.log"
fi
exit $status
