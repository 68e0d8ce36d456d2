# The two commands of README:
#   make run    install what is missing (Debian packages as root, the venv), then run the chain
#   make test   install what is missing, then run the tests
# Variables: CORES (default 8), TARGET (the Snakemake target), SNAKEMAKE_ARGS (e.g.
# "--configfile config/tiny.yaml"), PYTHON (a Python 3.9 to build the venv from), KALDI_KO=1
# (also install the released Korean Kaldi model; on by itself when TARGET or SNAKEMAKE_ARGS
# name kaldi_ko, e.g. SNAKEMAKE_ARGS="--configfile config/kaldi_ko.yaml"), PEERS=1 (also install
# the recognizers bench/peers.py compares against), TTS_EVAL=1 (also install what judges
# synthesized speech: resemblyzer, DNSMOS, Whisper tiny.en; on by itself when TARGET or
# SNAKEMAKE_ARGS name tts, e.g. TARGET=exp/tts/report.html).
VENV ?= .venv
CORES ?= 8
TARGET ?= exp/finetuned/wer.txt
SNAKEMAKE_ARGS ?=
PYTEST_ARGS ?=
KALDI_KO ?= $(if $(findstring kaldi_ko,$(TARGET) $(SNAKEMAKE_ARGS)),1,)
PEERS ?=
TTS_EVAL ?= $(if $(findstring tts,$(TARGET) $(SNAKEMAKE_ARGS)),1,)

.PHONY: run test setup bench

setup:
	@KALDI_KO=$(KALDI_KO) PEERS=$(PEERS) TTS_EVAL=$(TTS_EVAL) bash tools/setup.sh

# The target comes first: options such as --configfile take several values. A lock left by a
# killed run is removed when no Snakemake runs in this directory; --rerun-incomplete redoes
# its jobs.
run: setup
	@running=; for pid in $$(pgrep -f '[s]nakemake'); do \
	  [ "$$pid" != "$$$$" ] && [ "$$(readlink /proc/$$pid/cwd 2>/dev/null)" = "$(CURDIR)" ] && running=1; done; \
	if [ -z "$$running" ] && [ -n "$$(ls -A .snakemake/locks 2>/dev/null)" ]; then \
	  echo "make: no Snakemake runs here: removing the lock a killed run left"; \
	  $(VENV)/bin/snakemake --unlock >/dev/null; fi
	$(VENV)/bin/snakemake $(TARGET) --cores $(CORES) --rerun-incomplete $(SNAKEMAKE_ARGS)

# pytest exits 5 when it collected no tests: that is a failure, never a pass.
test: setup
	@$(VENV)/bin/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "ERROR: pytest collected no tests" >&2; fi; exit $$rc

# Every benchmark, in the tree `make run` built (they read its models and test sets), with the
# peer recognizers installed first; each writes bench/results/<name>.json (docs/benchmarks.md).
# The full run from nothing is its own command, alone, before: `bench/pipeline.py --keep .` in a
# clean clone builds this tree and writes its wall time, which `make bench` then keeps.
bench: PEERS = 1
bench: setup
	@test -f exp/report.json || { echo "make bench: no exp/report.json here: run \`make run\` first (the benchmarks read its tree)" >&2; exit 1; }
	$(VENV)/bin/python bench/pipeline.py --built .
	$(VENV)/bin/python bench/decode.py
	$(VENV)/bin/python bench/training.py
	$(VENV)/bin/python bench/losses.py
	$(VENV)/bin/python bench/features.py
	$(VENV)/bin/python bench/peers.py
