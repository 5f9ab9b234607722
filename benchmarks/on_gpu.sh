#!/usr/bin/env bash
# One lease of a GPU machine: the GPU rows of every throughput benchmark, each under its
# own time cap, so that one slow or failing benchmark never costs the others.
#
#   OUT=/some/dir bash benchmarks/on_gpu.sh [grid]     (grid: full, the default, or smoke)
#
# Results (.md/.json/.png) go to $OUT/results.tgz after every benchmark, the log to
# $OUT/log.txt. Fashion-MNIST and the Debian license texts are taken from .gpudata/ when
# the machine lacks them (copy /usr/share/datasets/fashion-mnist and
# /usr/share/common-licenses there first).
set -u
GRID=${1:-full}
OUT=${OUT:-/tmp/on_gpu}
RES=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python3}
exec > >(tee -a "$OUT/log.txt") 2>&1

for pair in fashion-mnist:/usr/share/datasets/fashion-mnist common-licenses:/usr/share/common-licenses; do
  src=.gpudata/${pair%%:*} dst=${pair#*:}
  if [ -d "$src" ] && [ ! -d "$dst" ]; then mkdir -p "$(dirname "$dst")" && cp -r "$src" "$dst"; fi
done
nvidia-smi -L 2>/dev/null
$PY -c "import jax, flax, optax, orbax.checkpoint as o; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'orbax', o.__version__, jax.devices())"

bench() {  # bench NAME CAP_SECONDS ARGS...
  local name=$1 cap=$2; shift 2
  echo "== $name (cap ${cap}s) start $(date -u +%T)"
  timeout -k 5 "$cap" $PY -m "benchmarks.$name" --grid "$GRID" --out-dir "$RES" "$@"
  echo "== $name rc=$? end $(date -u +%T)"
  tar czf "$OUT/results.tgz" -C "$RES" .
}
bench vs_pytorch 170
bench persistency_throughput 90
bench scaling 100
bench optimizer_overhead 200 --compile-rounds 1
ls -la "$RES"
