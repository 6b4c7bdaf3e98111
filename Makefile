# Deep Raster: common tasks. Everything runs in the project venv (.venv) made by scripts/setup.sh.
.PHONY: setup test demo package lint bench

# Extra pytest arguments: make test ARGS="-k tiling -x"
ARGS ?=

setup:
	bash scripts/setup.sh

test: setup
	bash scripts/run_tests.sh $(ARGS)

demo: setup
	bash scripts/demo.sh

package:
	.venv/bin/python scripts/package.py

lint:
	.venv/bin/ruff check .

# Placeholder: scripts/bench.sh is written with the benchmark work.
bench: setup
	bash scripts/bench.sh

# The GPU path proven on one CUDA GPU (< 8 min; JSON in bench/results/gpu.json, a table on stdout); exits 2 without
# a CUDA device. make bench-gpu GPU_ARGS="--device cpu" runs a CPU smoke test, GPU_ARGS=--dry-run checks inputs.
.PHONY: bench-gpu
GPU_ARGS ?=
bench-gpu: setup
	.venv/bin/python bench/bench_gpu.py $(GPU_ARGS)
