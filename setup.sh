#!/usr/bin/env bash
# Installs the project into ./.venv from nothing.
#   ./setup.sh          runtime only (enough for `rguide up`, `rguide sample`)
#   ./setup.sh --test   also the test tools, and Debian's Chromium for the browser tests
# torch goes in first and pinned: asking pip for a torch *range* with no torch
# installed would pull the multi-GB CUDA build; with 2.13.0 present the range in
# pyproject.toml is already satisfied.
set -euo pipefail
cd "$(dirname "$0")"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
PYTHON="${PYTHON:-python3}"
extras=""
if [[ "${1:-}" == "--test" ]]; then extras="[test]"; fi

[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==${TORCH_VERSION}"
.venv/bin/python -m pip install -q -e ".${extras}"

if [[ -n "$extras" ]] && ! command -v chromium >/dev/null 2>&1; then
    if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
        echo "installing Debian's chromium for the browser tests" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "note: no chromium on PATH; the browser tests will be skipped" >&2
    fi
fi
echo "ready: .venv/bin/rguide --help" >&2
