# The two entry points of the README. Both create .venv on first use and
# reinstall only when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_ARGS ?= --duration 60

.PHONY: run test lint faults bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[demo]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,demo,plot]'
	touch $@

run: $(VENV)/.installed-demo
	$(BIN)/cmagent demo $(DEMO_ARGS)

test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not faults"

# The fault-injection suite runs the real agent process against simulators,
# the sandbox API and Mosquitto, injecting faults (5 to 6 minutes).
faults: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -m faults tests/faults

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
