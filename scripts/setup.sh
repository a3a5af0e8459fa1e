#!/usr/bin/env bash
# Sets up everything jaxconv3d needs and builds it from source.
#  - Outside a virtual environment: creates .venv (Python >= 3.11) in the repository and uses it.
#  - Inside one (e.g. a GPU machine whose environment already has CUDA builds of torch and jax): uses it.
# Installs only what is missing: torch==2.13.0 (the CPU build on CPU machines), jax, and the build/test tools
# (equinox and flax too, so the tests of the optional layers in jaxconv3d.equinox / jaxconv3d.flax run).
# Then builds the extension (an editable install, so the source tree imports the built module) with
# --no-build-isolation, so the XLA FFI headers come from the jaxlib it runs with.
# With nvcc on PATH the CUDA kernels are compiled in (and a compile error fails the set-up); without, CPU only.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="$(scripts/py --which)"
if [ "$PY" = "$(pwd)/.venv/bin/python" ] && [ ! -x .venv/bin/python ]; then
  base="${PYTHON:-python3}"
  "$base" -c 'import sys; assert sys.version_info >= (3, 11), "jaxconv3d needs Python >= 3.11"'
  "$base" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi

missing=()
"$PY" -c 'import torch' 2>/dev/null || missing+=("torch==2.13.0")
"$PY" -c 'import jax' 2>/dev/null || missing+=("jax")
for mod_pkg in numpy:numpy pybind11:pybind11 scikit_build_core:scikit-build-core ninja:ninja \
               pytest:pytest hypothesis:hypothesis flatbuffers:flatbuffers equinox:equinox flax:flax; do
  "$PY" -c "import ${mod_pkg%%:*}" 2>/dev/null || missing+=("${mod_pkg##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  "$PY" -m pip install -q "${missing[@]}"
fi
command -v cmake >/dev/null || "$PY" -m pip install -q cmake
# Optional: `jaxconv3d bench --plot` / `jaxconv3d plot` draw with matplotlib. Best effort, fast failure where no
# package index is reachable (the tests that need it skip).
"$PY" -c 'import matplotlib' 2>/dev/null || "$PY" -m pip install -q --retries 0 --timeout 10 matplotlib 2>/dev/null \
  || echo "setup: matplotlib not installed (bench --plot unavailable)"

if command -v nvcc >/dev/null; then
  export JAXCONV3D_CUDA="${JAXCONV3D_CUDA:-ON}"
else
  export JAXCONV3D_CUDA="${JAXCONV3D_CUDA:-OFF}"
fi
echo "setup: building jaxconv3d (CUDA kernels: $JAXCONV3D_CUDA) with $PY"
"$PY" -m pip install -q --no-build-isolation --no-deps --editable .
"$PY" -c 'import jaxconv3d; print("setup: jaxconv3d", jaxconv3d.__version__, "built with CUDA:", jaxconv3d.built_with_cuda())'
