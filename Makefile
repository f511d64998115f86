# Two commands do all the set-up: `make demo` and `make test`. Both create .venv when it is
# missing and install the project into it (editable, with the extras they need).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cnntool-installed

.PHONY: demo showcase test lint install bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[samples,test]'
	@touch $(STAMP)

install: $(STAMP)

# One xdist worker per core; `worksteal` hands an idle worker the rest of the other's queue, so
# neither waits at the end for a long test file (5 min 21 s with `loadfile`, 4 min 53 s with
# worksteal, on the 2-core machine)
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist worksteal

# The lint gate (CI runs it before the tests): ruff's rules and its formatter, then mypy on the
# files [tool.mypy] names (cnntool/core), all configured in pyproject.toml.
# `$(VENV)/bin/ruff format .` and `ruff check --fix .` repair most ruff findings.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/demo.sh demo-out

# lite0's microscope with feature visualizations (5 layers × 16 units, 128-px MACO thumbnails),
# lite0's goldfish and ostrich class visualizations (224 px, 256 steps, judged by lite2), then
# LeNet-5 clean vs adversarially trained (CKA and AutoAttack-style robust accuracy).
# The microscope:
# 5.5 min measured on the shared 2-core CPU machine: too long for the 5-minute demo
showcase: $(STAMP)
	@mkdir -p showcase-out
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cnntool microscope efficientnet_lite0 imagenet-samples --units 16 \
	  -o showcase-out/microscope_lite0 > showcase-out/microscope_lite0.json
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cnntool visualize maximize efficientnet_lite0 --class goldfish \
	  --class ostrich -o showcase-out/lite0_classes.png -q > showcase-out/lite0_classes.jsonl
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/robustness_demo.sh showcase-out
	@echo "open showcase-out/microscope_lite0/index.html in a browser (no server needed)"
	@echo "clean vs adversarially trained LeNet-5: showcase-out/robustness/ (cka.png, */robustness.png)"

bench: $(STAMP)
	$(PY) benchmarks/profile_bench.py

clean:
	rm -rf demo-out showcase-out .pytest_cache .mypy_cache
