#!/usr/bin/env bash
# Set up everything this project needs on a fresh machine: system packages (when root) and the
# Python environment in .venv. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

# System packages used by tests: an OpenSSH server (the Jetson transport is tested against a real one),
# PostgreSQL's server binaries (the production instance is tested against a real server) and Chromium
# (headless screenshot of the UI). The last two without their recommended extras.
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  missing=()
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
  lean=()
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || lean+=(postgresql)
  command -v chromium >/dev/null 2>&1 || lean+=(chromium fonts-dejavu-core)
  if [ ${#missing[@]} -gt 0 ] || [ ${#lean[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]} ${lean[*]}"
    apt-get update -qq >/dev/null
    if [ ${#missing[@]} -gt 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if [ ${#lean[@]} -gt 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${lean[@]}" >/dev/null
    fi
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.lbzf-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python packages into .venv (torch/torchvision come from local wheels where present)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  # Ultralytics pulls opencv-python, which shares the cv2/ folder with the pinned headless build:
  # keep exactly one (a reinstall of either otherwise deletes files the other needs).
  if .venv/bin/python -m pip show -q opencv-python >/dev/null 2>&1; then
    .venv/bin/python -m pip uninstall -q -y opencv-python
    .venv/bin/python -m pip install -q --force-reinstall --no-deps opencv-python-headless==5.0.0.93
  fi
  touch "$stamp"
fi
echo "setup: ready (.venv)"
