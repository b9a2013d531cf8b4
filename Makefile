# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
REAL   := models/real/.fetched

.PHONY: demo test lint typecheck unit venv models bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# tensorrt-stubs declares a dependency on tensorrt, whose wheels live off PyPI: take the stubs alone.
	$(PY) -m pip install --quiet --no-deps 'tensorrt-stubs==10.13.0.35.1'
	touch $(STAMP)

venv: $(STAMP)

# Real pretrained exports, taken from PyPI wheels (nudenet, rapidocr-onnxruntime).
$(REAL): models/fetch_real.py | $(STAMP)
	$(PY) models/fetch_real.py

models: $(REAL)

demo: $(STAMP)
	$(VENV)/bin/onnxprune prune models/zoo/resnet_ts.onnx -o /tmp/onnxprune-demo.onnx --ratio 0.3 --verify

lint: $(STAMP)
	$(VENV)/bin/ruff check onnxprune tests benchmarks tools models
	$(PY) tools/import_cycles.py

# mypy checks onnxprune/tensorrt against tensorrt-stubs (made usable by tools/trt_stubs.py).
typecheck: $(STAMP)
	MYPYPATH=$$($(PY) tools/trt_stubs.py $(VENV)/trt-stubs) $(VENV)/bin/mypy

unit: $(STAMP) $(REAL)
	$(VENV)/bin/pytest -q -n 2 --durations=15

test: lint typecheck unit

bench: $(STAMP) $(REAL)
	$(PY) benchmarks/zoo.py

clean:
	rm -rf $(VENV) models/real
