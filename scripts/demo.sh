#!/usr/bin/env bash
# Sets up .venv-demo and runs the CPU demo (examples/wavllm/demo.py); arguments go to it.
# Re-running resumes in the same working folder (default demo_run/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh .venv-demo demo 2> >(grep -v "^WARNING: Location" >&2)
exec .venv-demo/bin/python examples/wavllm/demo.py "$@"
