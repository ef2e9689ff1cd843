# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
QASID := $(VENV)/bin/qasid
DATA := data

.PHONY: run test bench docs clean

$(VENV)/bin/activate:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Qasid needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Re-install only when the package metadata changes.
$(VENV)/.installed: $(VENV)/bin/activate setup.cfg pyproject.toml
	$(PY) -m pip install --quiet -e '.[speed]'
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed setup.cfg
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

$(DATA)/homeserver.yaml: | $(VENV)/.installed
	$(QASID) init --server-name localhost:8008 --data-dir $(DATA)

run: $(VENV)/.installed $(DATA)/homeserver.yaml
	$(QASID) run -c $(DATA)/homeserver.yaml

# matrix-js-sdk for the interop tests, pinned by its lock file.
JS_DIR := tests/interop/js
$(JS_DIR)/node_modules/.installed: $(JS_DIR)/package.json $(JS_DIR)/package-lock.json
	cd $(JS_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Synapse for the federation interop tests, in its own venv (it pins its own dependencies).
SYNAPSE_VENV := .work/synapse-venv
$(SYNAPSE_VENV)/.installed:
	$(PYTHON) -m venv $(SYNAPSE_VENV)
	$(SYNAPSE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'matrix-synapse>=1.140,<2'
	@touch $@

# coturn (turnserver, turnutils_uclient) for the TURN credential tests, from the system's packages when
# apt-get is there; without it the tests skip (or fail under CI=true).
COTURN_STAMP := .work/coturn.installed
$(COTURN_STAMP):
	@mkdir -p .work
	@if command -v turnserver >/dev/null 2>&1 && command -v turnutils_uclient >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y coturn || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y coturn) \
			|| echo "could not install coturn (not root?): the TURN tests against coturn will skip, or fail under CI=true"; \
	else echo "coturn not installed and no apt-get: the TURN tests against coturn will skip"; fi
	@if command -v turnserver >/dev/null 2>&1; then touch $@; fi

# Two pytest workers (pytest-xdist): every test brings up its own servers, databases and ports, so they
# run side by side; the 100,000-event sync test starts first so nothing waits on it at the end.
PYTEST_ARGS ?= -n 2 --dist worksteal

test: $(VENV)/.installed-test $(JS_DIR)/node_modules/.installed $(SYNAPSE_VENV)/.installed $(COTURN_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Qasid against Synapse on loopback (installs Synapse into bench/.work on first use), federation against
# Synapse, a 10,000-event audit export and its verification, then state resolution.
bench: $(VENV)/.installed-test $(SYNAPSE_VENV)/.installed
	$(PY) -m bench servers $(BENCH_ARGS)
	$(PY) -m bench federation
	$(PY) -m bench audit
	$(PY) -m bench state-res

docs: $(VENV)/.installed
	$(QASID) config-reference > docs/configuration.md
	$(PY) -m homeserver.api.coverage

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
