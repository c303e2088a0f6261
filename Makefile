# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU wheel by default. With a CUDA torch already importable by $(PY), the venv sees the
# system site-packages and keeps that torch instead of installing one.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml Makefile
	@if $(PY) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then \
		echo "CUDA torch found: keeping it"; $(PY) -m venv --system-site-packages $(VENV); \
	else \
		$(PY) -m venv $(VENV) && $(BIN)/pip install -q "$(TORCH_SPEC)"; \
	fi
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps "ocnn==2.3.3"
	@$(BIN)/python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/pointssl demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_pretrain.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
