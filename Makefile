# Two entry points: `make demo` and `make test`. Each sets up its own virtual environment.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DEMO   ?= demo_out
export HF_HUB_OFFLINE := 1
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache

.PHONY: demo test venv bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch from the pinned build on this machine's disk (an unpinned torch may pull several GB)
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	# gpl: pylibjpeg-libjpeg, the reference JPEG decoder the tests compare libjpeg-turbo with
	$(BIN)/python -m pip install -q -e '.[fast,gpl,train,dask,dev]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: venv
	bash scripts/demo.sh $(DEMO)

test: venv
	$(BIN)/python -m pytest -n 2 --dist loadfile -q tests

# every benchmark, each printing ratios against its baseline (results: benchmarks/RESULTS.md)
bench: venv
	$(BIN)/python benchmarks/decode.py
	$(BIN)/python benchmarks/decode_scale.py
	$(BIN)/python benchmarks/harmonize.py
	$(BIN)/python benchmarks/harmonize_folder.py
	$(BIN)/python benchmarks/startup_io.py
	$(BIN)/python benchmarks/segmentation_real.py
	$(BIN)/python benchmarks/reference_bits.py
	$(BIN)/python benchmarks/derived.py
	NUMBA_NUM_THREADS=1 $(BIN)/python benchmarks/shard.py
	$(BIN)/python benchmarks/loader.py --full-size 4096x3328
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/codestream_flips.py --crop 0

clean:
	rm -rf $(VENV) $(DEMO) .numba_cache .pytest_cache

# every task x view configuration + harmonisation ablation; settings (make or environment
# variables, e.g. make train-all SHARDS=... BACKBONES="efficientnet_b0 resnet50" SIZE=224
# EPOCHS=100): see scripts/train_all.sh
.PHONY: train-all
train-all: venv
	bash scripts/train_all.sh
