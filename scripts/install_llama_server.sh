#!/usr/bin/env bash
# Build llama.cpp's llama-server (the default backend) and put it beside PYTHON.
#
#   scripts/install_llama_server.sh [PYTHON]      (default: .venv/bin/python)
#
# It is built from the llama.cpp sources vendored in the llama-cpp-python sdist, so
# the backend runs the same llama.cpp and ggml that the estimator follows and that
# llama_cpp.server (the other backend) links. About 13 minutes on 2 cores, once per
# flavour and version; the binary is kept outside the repository:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/gpufleet/llama-server/<flavour>-<version>-threadpool/llama-server
# and copied to PYTHON's bin directory, where gpufleet looks for it
# (GPUFLEET_LLAMA_SERVER names another one). Offline: no web UI assets, no downloads
# besides the sdist (pip's cache or the package index).
# Flavour "cuda" only where `nvidia-smi -L` lists a GPU, else "cpu"; GGML_NATIVE=OFF
# as for the wheel (a native build crashes on quantized models on some CPUs).
# GGML_OPENMP=OFF: ggml's own thread pool instead of OpenMP. With OpenMP every graph
# node ends in an `omp barrier`; with OMP_WAIT_POLICY=passive (needed on a busy machine,
# else idle servers spin) each one is a futex sleep and wake, which made a small model
# decode 4x slower on 2 cores (193 against 809 tok/s, docs/benchmarks.md). ggml's pool
# spins briefly at its barriers and sleeps when idle (0.1 % of a core).
set -euo pipefail

python=${1:-.venv/bin/python}
# The same version as scripts/install_llama_cpp.sh: one llama.cpp for both backends.
version=$(sed -n 's/^version=\([0-9.]*\).*/\1/p' "$(dirname "$0")/install_llama_cpp.sh")
jobs=${GPUFLEET_BUILD_JOBS:-$(nproc)}

if nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  flavour=cuda
  cmake_args=(-DGGML_CUDA=on)
else
  flavour=cpu
  cmake_args=()
fi

# "-threadpool": built without OpenMP (a cache from before that change is not reused).
cache_dir=${XDG_CACHE_HOME:-$HOME/.cache}/gpufleet/llama-server/$flavour-$version-threadpool
binary=$cache_dir/llama-server
bin_dir=$(dirname "$python")

if [ ! -x "$binary" ]; then
  echo "Building llama-server from llama-cpp-python $version's llama.cpp ($flavour):" \
    "about 13 minutes on 2 cores, once; kept in $cache_dir"
  work=$(mktemp -d "${TMPDIR:-/tmp}/gpufleet-llama-server.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  "$python" -m pip download --quiet --no-deps --no-binary :all: \
    --dest "$work" "llama-cpp-python==$version"
  tar -xzf "$work"/llama_cpp_python-"$version".tar.gz -C "$work"
  source_dir=$work/llama_cpp_python-$version/vendor/llama.cpp
  cmake -S "$source_dir" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
    -DGGML_OPENMP=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF \
    ${cmake_args[@]+"${cmake_args[@]}"} >"$work/cmake.log" 2>&1 \
    || { tail -n 40 "$work/cmake.log"; exit 1; }
  cmake --build "$work/build" --target llama-server -j "$jobs" >"$work/build.log" 2>&1 \
    || { tail -n 40 "$work/build.log"; exit 1; }
  mkdir -p "$cache_dir"
  install -m 0755 "$work/build/bin/llama-server" "$binary.partial"
  mv "$binary.partial" "$binary"
else
  echo "llama-server ($flavour, llama-cpp-python $version): using $binary"
fi

install -m 0755 "$binary" "$bin_dir/llama-server"
"$bin_dir/llama-server" --version 2>&1 | head -n 2
