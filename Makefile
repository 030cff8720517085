PY := .venv/bin/python

.PHONY: setup serve test test-fast default-model replicate clean

setup:
	@bash scripts/setup.sh

## Serve the embedded default model on http://127.0.0.1:8000/v1 (sets up on first use).
serve: setup
	$(PY) -m serve $(ARGS)

## Everything CI runs, including the end-to-end tests against a real vLLM server.
test: setup
	$(PY) -m pytest $(ARGS)

## Unit tests only (no vLLM server).
test-fast: setup
	$(PY) -m pytest -m "not slow" $(ARGS)

## LongLoRA's comparison in miniature (about an hour: 58 min on one core of 2): benchmarks/results/replication.{md,png}
replicate: setup
	$(PY) benchmarks/replicate.py $(ARGS)

default-model: setup
	$(PY) -c "from longctx.default_model import ensure_default_model; ensure_default_model()"

clean:
	rm -rf .venv .pytest_cache
