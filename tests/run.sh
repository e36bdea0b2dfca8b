#!/usr/bin/env bash
# The README's test command: install the project with its test extras (and Debian's Chromium for the
# browser tests), check lint and formatting, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
python -m pip install -q -e '.[test]'
ruff check .            # lint, line length 110 included
ruff format --check .   # formatting
# The demo recipes end to end (marker `demo`, 4 minutes) run on request: bash tests/run.sh -m demo
# Two test processes (RESTGOV_TEST_WORKERS, 0 for one process), each taking whole files so that a module's
# fixtures are built once, longest files first (tests/conftest.py LONG_FIRST; --no-loadscope-reorder keeps
# that order); each process and the campaign workers it starts use one torch thread (two processes on two
# cores with two threads each slowed each other several times over).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
python -m pytest -q --durations=20 -n "${RESTGOV_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder \
    -m "not demo" "$@"
