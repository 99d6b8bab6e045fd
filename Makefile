# `make demo` and `make test` bootstrap .venv on a fresh machine, then run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch/torchvision are pinned here (not in pyproject) to the builds this project's machines carry on disk;
# pyproject declares ranges so users with other CUDA builds can install.
TORCH_PIN := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test bench perf lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check $(TORCH_PIN)
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev,onnx,plot,serve,video]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/maskformer demo $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m pytest -m slow $(ARGS)

# this project vs transformers and onnxruntime, every model/task/batch, one report (about 10 minutes)
perf: $(STAMP)
	$(BIN)/python benchmarks/suite.py $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
