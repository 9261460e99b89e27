# Two commands do all set-up on a fresh machine (Python 3.11+, Java 17, Maven):
#   make run    install, then run the main job on the embedded default (no Kafka, no server)
#   make test   install, fetch the Kafka jars, lint + type-check, run the whole suite
#               (including the tier that starts a real Kafka broker)
PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
DURATION ?= 60
PYTEST_ARGS ?=

.PHONY: install run test test-fast lint typecheck kafka-jars bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/convergence run --duration $(DURATION)

kafka-jars: install
	$(BIN)/convergence kafka fetch

lint: install
	$(BIN)/ruff check .

# mypy cannot follow the editable install's import hook, so it checks a tree of
# symlinks laid out the way the package installs (convergence/ = core/ + sub-packages).
typecheck: install
	rm -rf .build/typecheck && mkdir -p .build/typecheck/convergence
	ln -s $(CURDIR)/core/*.py $(CURDIR)/core/py.typed .build/typecheck/convergence/
	for d in detectors models ground_stations streams store responses cli simulation evaluation dashboard; do \
	    ln -s $(CURDIR)/$$d .build/typecheck/convergence/$$d; done
	cd .build/typecheck && $(CURDIR)/$(BIN)/mypy -p convergence

test: install kafka-jars lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/pytest -m "not kafka" $(PYTEST_ARGS)

bench: install
	$(BIN)/convergence bench detectors --json

clean:
	rm -rf $(VENV) .build .pytest_cache .mypy_cache .ruff_cache *.egg-info
