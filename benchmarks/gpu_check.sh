#!/usr/bin/env bash
# The GPU check on a machine with no network: finds the Python that has torch, installs missing
# pure-Python dependencies from a folder of wheels if one came along, then runs gpu_check.py.
#
#   bash benchmarks/gpu_check.sh [gpu_check.py arguments]      e.g.  --out DIR,  --only generation
#
# Python: $PYTHON if set, else the first of python3, python that imports torch (GPU images ship
# torch with CUDA in their own python3; do not pip install torch there, there is no network).
# Wheels: $GPU_CHECK_WHEELS if set, else ./.whl if it exists (e.g. tomli-w, the one dependency GPU
# images tend to lack: `pip download --no-deps -d .whl tomli-w` on a machine with the network).
set -uo pipefail
cd "$(dirname "$0")/.."

py=""
for candidate in ${PYTHON:-} python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import torch" 2>/dev/null; then
        py=$candidate
        break
    fi
done
if [ -z "$py" ]; then
    echo "gpu_check: no Python here imports torch (tried: ${PYTHON:-} python3 python); set PYTHON=/path/to/python" >&2
    exit 2
fi

wheels=${GPU_CHECK_WHEELS:-.whl}
if [ -d "$wheels" ] && ls "$wheels"/*.whl >/dev/null 2>&1; then
    site=$(mktemp -d)
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl || exit 2
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi

echo "gpu_check: $("$py" -c 'import sys, torch; print(sys.executable, "torch", torch.__version__, "cuda", torch.version.cuda)')" >&2
PYTHONUNBUFFERED=1 exec "$py" benchmarks/gpu_check.py "$@"
