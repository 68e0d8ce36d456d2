#!/usr/bin/env bash
# Build the Python module kaldi_lattice_faster (local/kaldi_ko/kaldi_lattice_faster.cc: Kaldi's
# LatticeFasterDecoder over static or Vosk lookahead graphs, with tracebacks and lattices) into
# the venv's site-packages.
# The decoder's C++ is kaldi-hmm-gmm's, its lattice types kaldifst's: both sources come from
# their PyPI sdists (pinned below); OpenFst is Debian's (libfst-dev), pybind11 requirements.txt's.
# Called by tools/setup.sh; a second call builds nothing unless this script or the source changed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
KALDI_HMM_GMM=kaldi-hmm-gmm-1.1.4
KALDIFST=kaldifst-1.8.3
source_file=local/kaldi_ko/kaldi_lattice_faster.cc
py="$VENV/bin/python"
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
module="$site/kaldi_lattice_faster$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
stamp="$VENV/.built-kaldi_lattice_faster"
hash=$(cat "$source_file" "$0" | sha256sum | cut -d' ' -f1)
if [ -f "$module" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ]; then
  exit 0
fi
for tool in g++ fstcompile; do
  command -v "$tool" >/dev/null || { echo "setup: $tool is missing: run tools/setup.sh as root" >&2; exit 1; }
done
[ -f /usr/include/fst/fstlib.h ] || { echo "setup: OpenFst's headers are missing: apt-get install libfst-dev" >&2; exit 1; }
echo "setup: building kaldi_lattice_faster (Kaldi's LatticeFasterDecoder; ~1 min)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" -m pip download -q --no-deps --no-binary :all: --no-build-isolation -d "$work" \
  "${KALDI_HMM_GMM%-*}==${KALDI_HMM_GMM##*-}" "${KALDIFST%-*}==${KALDIFST##*-}"
for archive in "$work"/*.tar.gz; do tar xzf "$archive" -C "$work"; done
# kaldifst 1.8 spells OpenFst 1.8's flag name; Debian's OpenFst is 1.7.9
g++ -O2 -shared -fPIC -std=c++17 -DFST_FLAGS_fst_weight_separator=FLAGS_fst_weight_separator \
  $("$py" -m pybind11 --includes) -I"$work/$KALDI_HMM_GMM" -I"$work/$KALDIFST" \
  "$source_file" "$work/$KALDI_HMM_GMM/kaldi-hmm-gmm/csrc/lattice-faster-decoder.cc" \
  -lfstngram -lfst -o "$module.tmp"
mv "$module.tmp" "$module"
echo "$hash" > "$stamp"
