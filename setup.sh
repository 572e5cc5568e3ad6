#!/usr/bin/env bash
# One-step set-up for mtfuse. Creates ./.venv (once), installs mtfuse with torch==2.13.0 into it, then:
#   bash setup.sh demo    train the embedded demo (packaged MiniLM + BBC News, no network, CPU is fine)
#   bash setup.sh test    run the test suite
#   bash setup.sh         install only
# Safe to run again: the install step is skipped while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.mtfuse-install-stamp
want=$(cat pyproject.toml setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # The pin matters: an unpinned torch pulls a multi-GB CUDA build on a CPU machine.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[dev]"
  # LibMTL is a test-only reference; its metadata asks for torchvision, which it does not need for the
  # weighting code the tests compare against (and which would pull another torch build).
  .venv/bin/python -m pip install -q --no-deps "libmtl==1.1.5"
  echo "$want" > "$stamp"
fi
case "${1:-}" in
  demo) shift; exec .venv/bin/mtfuse demo "$@" ;;
  test) shift; exec .venv/bin/python -m pytest -q "$@" ;;
  "") echo "installed: activate with 'source .venv/bin/activate', then run 'mtfuse --help'" ;;
  *) echo "usage: bash setup.sh [demo|test]" >&2; exit 2 ;;
esac
