#!/usr/bin/env bash
# Install qscope into ./.venv, from the project's own files only.
#   scripts/install.sh            python packages (+ Debian text corpora for the demo, where apt is usable)
#   scripts/install.sh --test     also the test tools, Ray (the cluster extra), Debian's headless Chromium and
#                                 its Postgres server
# torch goes in first: on a machine without CUDA we take the CPU build torch==2.13.0, so that the later
# `pip install -e .` finds torch already satisfied and does not pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
WITH_TEST=0
[[ "${1:-}" == "--test" ]] && WITH_TEST=1

apt_install() {
  # Best effort: system packages are optional extras (corpus text, a browser); never fatal.
  command -v apt-get >/dev/null || return 0
  local sudo=""
  if [[ $(id -u) -ne 0 ]]; then command -v sudo >/dev/null && sudo -n true 2>/dev/null && sudo="sudo -n" || return 0; fi
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  echo "install.sh: apt-get install ${missing[*]}"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    >/tmp/qscope-apt.log 2>&1 || echo "install.sh: apt-get failed (see /tmp/qscope-apt.log); continuing without ${missing[*]}"
}

# Real prose for the mini-Qwen corpus (the stdlib sources are always there).
apt_install python3.11-doc fortunes jargon-text
# the browser tests' Chromium; the Postgres server the app-database tests start (tests/helpers/postgres.py)
[[ $WITH_TEST -eq 1 ]] && apt_install chromium chromium-driver postgresql

step() { echo "install.sh: $*"; }
if [[ ! -x "$VENV/bin/python" ]]; then
  step "creating the virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
# A first install shows pip's own lines and a progress bar per download (minutes of silence looked like a hang);
# once qscope is installed, a re-run only checks, quietly
PIP="$VENV/bin/python -m pip"
QUIET=""
"$VENV/bin/python" -c "import qscope" 2>/dev/null && QUIET="-q"
pip_install() { $PIP install $QUIET "$@"; }
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    step "installing torch (the CUDA build: about 3 GB, a few minutes the first time)"
    pip_install "torch>=2.4"          # a GPU host: the default CUDA build
  else
    step "installing torch (the CPU build: about 200 MB, a minute or two the first time)"
    pip_install "${QSCOPE_TORCH:-torch==2.13.0}"   # CPU build; see README
  fi
fi
if [[ $WITH_TEST -eq 1 ]]; then
  step "installing qscope with the test tools and Ray"
  pip_install -e ".[dev,cluster]"   # cluster: Ray, for tests/integration/harvest/test_cluster.py
else
  step "installing qscope and its dependencies"
  pip_install -e .
fi
step "done"
