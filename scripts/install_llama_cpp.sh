#!/usr/bin/env bash
# Install llama-cpp-python (the backends' OpenAI-compatible server) into a virtualenv.
#
#   scripts/install_llama_cpp.sh [PYTHON]        (default: .venv/bin/python)
#
# llama-cpp-python always compiles from source (about 8 minutes on 2 cores), so the
# wheel is built once per flavour and kept outside the repository:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/gpufleet/llama-wheels/<flavour>-<version>/
# Flavour "cuda" only where `nvidia-smi -L` lists a GPU (nvcc alone is not enough),
# else "cpu". Both are built with GGML_NATIVE=OFF: a native build crashes on quantized
# models on some CPUs, and a wheel in the cache must run on any machine of its flavour.
# pip's own wheel cache ignores CMAKE_ARGS, hence --no-cache-dir and our own directory.
set -euo pipefail

python=${1:-.venv/bin/python}
version=0.3.36  # a new version: change it here (the Makefile reinstalls when this file changes)

if nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  flavour=cuda
  cmake_args="-DGGML_CUDA=on -DGGML_NATIVE=OFF"
else
  flavour=cpu
  cmake_args="-DGGML_NATIVE=OFF"
fi

wheel_dir=${XDG_CACHE_HOME:-$HOME/.cache}/gpufleet/llama-wheels/$flavour-$version
find_wheel() { find "$wheel_dir" -maxdepth 1 -name "llama_cpp_python-$version-*.whl" 2>/dev/null | head -n 1 || true; }
wheel=$(find_wheel)

if [ -z "$wheel" ]; then
  echo "Building llama-cpp-python $version ($flavour, CMAKE_ARGS=$cmake_args):" \
    "about 8 minutes on 2 cores, once; the wheel is kept in $wheel_dir"
  mkdir -p "$(dirname "$wheel_dir")"
  build=$(mktemp -d "$wheel_dir.partial.XXXXXX")
  trap 'rm -rf "$build"' EXIT
  CMAKE_ARGS="$cmake_args" "$python" -m pip wheel --no-deps --no-cache-dir \
    --no-binary llama-cpp-python --wheel-dir "$build" "llama-cpp-python==$version"
  mkdir -p "$wheel_dir"
  mv "$build"/llama_cpp_python-"$version"-*.whl "$wheel_dir"/
  wheel=$(find_wheel)
else
  echo "llama-cpp-python $version ($flavour): using $wheel"
fi

# --force-reinstall so that a change of flavour at the same version replaces the library;
# the second call brings in the server extra's dependencies (and skips what is there).
"$python" -m pip install --quiet --no-deps --force-reinstall "$wheel"
"$python" -m pip install --quiet "$wheel[server]"
"$python" -c "import llama_cpp, llama_cpp.server.app; print('llama_cpp', llama_cpp.__version__, 'imports')"
