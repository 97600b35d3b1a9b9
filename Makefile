# The README's commands, run from the virtual environment that scripts/setup.sh makes:
#
#     make setup && make repro && make test
#
# .venv/bin comes first on PATH, so dvc, pytest and the `python` that
# dvc.yaml's stages call are the venv's. Narrow a test run with
# PYTEST_ARGS, e.g. make test PYTEST_ARGS="tests/test_dvc_yaml.py -x".
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
PYTEST_ARGS ?=

# pytest exits 5 when it collected no test: a broken collection must fail loudly, not pass as empty.
define pytest
	python -m pytest $(1) $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make: pytest collected no tests; failing on purpose" >&2; fi; \
	exit $$status
endef

.PHONY: setup repro test test-slow

setup:
	bash scripts/setup.sh

repro: | $(VENV)/bin/dw-pipe
	dvc repro

test: | $(VENV)/bin/dw-pipe
	$(call pytest,)

test-slow: | $(VENV)/bin/dw-pipe
	$(call pytest,-m slow)

$(VENV)/bin/dw-pipe:
	@echo "make: $(VENV) is not set up here: run 'make setup' first" >&2; exit 2
