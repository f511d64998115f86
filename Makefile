# Two commands do all the set-up: `make demo` and `make test`. Both create .venv when it is
# missing and install the project into it (editable, with the extras they need).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cnntool-installed

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[samples,test]'
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadfile

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/demo.sh demo-out

bench: $(STAMP)
	$(PY) benchmarks/profile_bench.py

clean:
	rm -rf demo-out .pytest_cache
