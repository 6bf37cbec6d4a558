#!/usr/bin/env bash
# Sets up .venv-test (the tests' and the benchmarks' dependencies) and runs the whole test suite.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh .venv-test test,bench 2> >(grep -v "^WARNING: Location" >&2)
set +e
.venv-test/bin/python -m pytest tests "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
exit $rc
