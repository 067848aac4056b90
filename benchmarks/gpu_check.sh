#!/usr/bin/env bash
# The GPU check of issue 19 (see benchmarks/gpu_check.py for what it measures). From anywhere:
#   bash benchmarks/gpu_check.sh [--seconds 30] [--parts inference,train,torchrun] [--device cpu --quick] ...
# Writes gpu_check.json, gpu_check.txt and one log per part to ${OUT:-.bench/gpu}; about 8 minutes at most.
# Python: $PYTHON, else the first of .venv/bin/python, python3 whose torch sees CUDA (any torch with --device cpu).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OUT="${OUT:-.bench/gpu}"

want_cuda=1
prev=""
for arg in "$@"; do
    if [[ "$arg" == --device=cpu* || ( "$prev" == --device && "$arg" == cpu* ) ]]; then want_cuda=0; fi
    prev="$arg"
done

if [[ -z "${PYTHON:-}" ]]; then
    check='import sys, torch; sys.exit(0 if torch.cuda.is_available() or not int(sys.argv[1]) else 1)'
    for candidate in .venv/bin/python python3; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "$check" "$want_cuda" >/dev/null 2>&1; then
            PYTHON="$candidate"
            break
        fi
    done
fi
if [[ -z "${PYTHON:-}" ]]; then
    echo "gpu_check.sh: no python with torch$([[ $want_cuda == 1 ]] && echo ' and CUDA') found; set PYTHON=..." >&2
    exit 2
fi
echo "gpu_check.sh: $PYTHON ($("$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'))"
exec "$PYTHON" benchmarks/gpu_check.py --out "$OUT" "$@"
