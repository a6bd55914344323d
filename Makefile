# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.hushlink-installed
SHARED ?= ../shared
DEMO   := build/demo

.PHONY: demo test lint bootstrap venv model bench clean system system-status system-down \
	system-demo check-aarch64

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

venv: $(STAMP)

bootstrap:
	scripts/bootstrap-system

demo: $(STAMP) bootstrap
	@mkdir -p $(DEMO)
	$(PY) scripts/make_demo_audio.py --shared $(SHARED) --out $(DEMO)/noisy.wav
	$(VENV)/bin/edge-denoise info $(DEMO)/noisy.wav
	$(VENV)/bin/edge-denoise file $(DEMO)/noisy.wav $(DEMO)/denoised.wav
	$(PY) scripts/demo_score.py $(DEMO)/clean.wav $(DEMO)/noisy.wav $(DEMO)/denoised.wav
	@echo "demo: listen to $(DEMO)/noisy.wav and $(DEMO)/denoised.wav"

test: $(STAMP) bootstrap
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf build .pytest_cache

# the shipped denoiser v2.0.0 (training/configs/v2.toml; needs `make corpus`; the post-filter
# sweep's choice goes into its [export] mask_power). default.toml is v1.4.0's shared-data
# recipe, which also defines the old test split.
model: $(STAMP)
	$(VENV)/bin/train-denoiser prepare -c v2
	$(VENV)/bin/train-denoiser teacher -c v2
	$(VENV)/bin/train-denoiser student -c v2
	$(PY) benchmarks/mask_postfilter.py --config v2 --work build/train/v2 --out build/train/v2
	$(VENV)/bin/train-denoiser export -c v2 --ship
	$(VENV)/bin/train-denoiser evaluate -c v2

# the larger corpus and the cross-corpus split, from pinned public repositories: needs git
# mirrors of training/corpus/sources.toml's repositories under MIRRORS (README, "Corpus")
MIRRORS ?= build/mirrors
corpus: $(STAMP)
	$(VENV)/bin/train-denoiser corpus --mirrors $(MIRRORS)

# both splits: the old test split (same corpora as training) and the cross-corpus split
bench-denoise: $(STAMP)
	$(PY) benchmarks/denoise.py --utterances 20
	$(PY) benchmarks/denoise_cross.py
	$(PY) benchmarks/denoise_level.py
	$(PY) benchmarks/denoise_cpu.py

# the shipped model against its training target's oracle, per SNR, on each split
bench-headroom: $(STAMP)
	$(PY) benchmarks/denoise_headroom.py --utterances 20

# the student's mask post-filter, chosen on validation speakers (training/configs/default.toml)
CONFIG ?= default
bench-postfilter: $(STAMP)
	$(PY) benchmarks/mask_postfilter.py --config $(CONFIG) --work build/train/$(CONFIG)

# issue 21: training throughput, 1 vs 2 DDP ranks (torchrun, gloo) x 0/1/2 loader workers
bench-train: $(STAMP)
	$(PY) benchmarks/train.py $(if $(QUICK),--quick)

# issue 5: the on-device loop benchmark (per-hop cost on both interpreters, PulseAudio live run)
bench-edge-loop: $(STAMP) bootstrap
	$(PY) benchmarks/edge_loop.py --minutes $(or $(MINUTES),10)

# issue 18: the serial link through a byte-corrupting relay (probes, 10^4 mixed-size exchanges)
bench-serial-noise: $(STAMP) bootstrap
	$(PY) benchmarks/serial_noise.py

# issue 22: SRTP's cost per packet (bytes, protect/unprotect µs next to Opus) and on a stream
bench-srtp: $(STAMP)
	$(PY) benchmarks/srtp.py

# issue 18: soak (not in CI): impaired stream + serial agent through a 1 % corrupting relay
bench-soak: $(STAMP) bootstrap
	$(PY) benchmarks/soak.py --minutes $(or $(MINUTES),30)

# issue 20: a host and N simulated devices in network namespaces on this machine (root), with
# the dashboard on http://127.0.0.1:8765/ (docs/system.md); `make system-down` removes it all
N ?= 2
system: $(STAMP) bootstrap
	$(VENV)/bin/host-calibrate system up --devices $(N)

system-status: $(STAMP)
	$(VENV)/bin/host-calibrate system status

system-down: $(STAMP)
	$(VENV)/bin/host-calibrate system down

# issue 20: the demo of it all (root, a few minutes): up, impair and calibrate device 1, push a
# bundle with a canary, hum on the last device and its repair, down; a report with the numbers
# (benchmarks/results/system_demo.md). QUICK=1: shorter measurements.
system-demo: $(STAMP) bootstrap
	$(VENV)/bin/host-calibrate system demo $(if $(QUICK),--quick)

# issue 20: bring-up time, PTP and link per device, impaired loss, apply latency, clean down
bench-system: $(STAMP) bootstrap
	$(PY) benchmarks/system.py --devices $(N)

# issue 20 item 3: push to 8 devices on ptys, one at a time vs all at once (paced and unpaced)
bench-fleet: $(STAMP) bootstrap
	$(PY) benchmarks/fleet.py --devices $(or $(DEVICES),8)

# issue 19 item 2: two receivers behind different links play one stream at PTP time (not in CI)
bench-playout: $(STAMP) bootstrap
	$(PY) benchmarks/playout.py --minutes $(or $(MINUTES),5)

# issue 22: the edge install and `edge-denoise file` on aarch64 under qemu (not in CI: ~40 min
# the first time; needs root, deb.debian.org and PyPI), compared with this machine's output
check-aarch64: $(STAMP)
	PY=$(PY) scripts/check-aarch64

# issue 19.3: probe-train capacity estimate vs the emulator's rate limit, and the tuned bitrate
bench-capacity: $(STAMP)
	$(PY) benchmarks/capacity.py --seconds $(or $(CAP_SECONDS),20)
