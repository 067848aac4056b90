# Two commands do all the set-up on a fresh machine:
#   make demo   — create .venv, install the project, run the main job on the built-in synthetic dataset
#   make test   — same set-up, then `make lint` (ruff, mypy) and the whole test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)

.PHONY: demo test lint bench venv clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: pip takes the CPU build on this machine's disk (never a multi-GB CUDA build)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test,onnx,lint,web]' pretty_midi
	# tinysoundfont's declared dependency (pyaudio) is only for playback and needs PortAudio headers
	$(PIP) install -q --no-deps tinysoundfont
	# museval imports stempeg, which refuses to import without the ffmpeg/ffprobe binaries
	command -v ffprobe >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null; } || \
	    echo "warning: ffmpeg/ffprobe missing: museval reference tests will be skipped"
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m danna_sep.demo

# ruff (lint, import order, formatting) and mypy, configured in pyproject.toml: zero findings
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: lint
	$(PY) -m pytest -q -n 2 --dist loadfile

# issue 19's one table (benchmarks/bench_table.py): the benchmark-only peers first (installed without their heavy
# dependency trees), then every separation row, the goals and the training steps (batch 1 here: the configs' own
# batches cost minutes a step on 2 cores; `make bench BENCH_ARGS=` runs them; BENCH_ARGS="--seconds 10": quick)
BENCH_ARGS ?= --train-batch 1
bench: $(STAMP)
	$(PIP) install -q --no-deps openunmix demucs
	$(PIP) install -q einops  # imported by demucs.demucs
	$(PY) benchmarks/bench_table.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .demo
