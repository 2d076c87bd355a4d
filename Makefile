# jobpulse — the two commands: `make run` (the app on its embedded default) and `make test` (everything).
#
# Every target installs what it needs, and only from the lock in requirements/
# (exact versions with hashes; docs/DEPENDENCIES.md), into the virtualenv that
# is active, else into .venv here (made on first use). No target relies on what
# another one happened to install.
VENV ?= $(or $(VIRTUAL_ENV),$(CURDIR)/.venv)
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip --disable-pip-version-check
# Tools and the programs the tests start (gunicorn, py-spy, ...) come from the same virtualenv.
export PATH := $(VENV)/bin:$(PATH)

.PHONY: run test app-deps deps system-deps cluster cluster-up cluster-down lint lock lock-check format \
	deploy-jobspecs screenshots benchmarks

run: app-deps  ## Serve the app at http://127.0.0.1:8000 (gunicorn gevent worker, local runner, SQLite)
	$(PYTHON) -m gunicorn wsgi:app

test: deps system-deps cluster lint  ## Install what the tests need, lint, and run every test (PYTEST_ARGS=... to pass more)
	$(PYTHON) -m pytest $(PYTEST_ARGS)

# -- installing -----------------------------------------------------------------
# A stamp in the virtualenv records that it holds a lock's exact versions; it
# is redone whenever the lock or the package metadata changes. The locked build
# backend goes in first, and everything built from source (the package itself,
# editable; uWSGI for the tests) is built with it, never with whatever is newest.

$(PYTHON):
	python3 -m venv $(VENV)

$(VENV)/.jobpulse-app: requirements/build.txt requirements/app.txt setup.cfg pyproject.toml | $(PYTHON)
	$(PIP) install -q --require-hashes -r requirements/build.txt
	$(PIP) install -q --require-hashes --no-build-isolation -r requirements/app.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.jobpulse-dev: requirements/build.txt requirements/dev.txt setup.cfg pyproject.toml | $(PYTHON)
	$(PIP) install -q --require-hashes -r requirements/build.txt
	$(PIP) install -q --require-hashes --no-build-isolation -r requirements/dev.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $@

app-deps: $(VENV)/.jobpulse-app  ## What the app needs to run

deps: $(VENV)/.jobpulse-dev  ## What the tests, the lint, the benchmarks and the control plane scripts need

system-deps:  ## Debian packages the tests drive for real (curl, redis-server, chromium, npm, nginx)
	bash tests/system-deps.sh

lock: deps  ## Refresh requirements/ after editing setup.cfg; UPGRADE=name (or UPGRADE=all) moves pins on purpose
	$(PYTHON) requirements/lock.py $(if $(filter all,$(UPGRADE)),--upgrade,$(foreach name,$(UPGRADE),--upgrade-package $(name)))

lock-check: deps  ## Fail, saying to run `make lock`, when requirements/ no longer satisfies setup.cfg
	$(PYTHON) requirements/lock.py --check

# -- the control plane of the Kubernetes tests (tests/cluster/README.md) --------

cluster:  ## Build (or reuse) the cached control plane binaries, unless KUBEBUILDER_ASSETS or TEST_KUBECONFIG is set
	@if [ -n "$$TEST_KUBECONFIG" ] || [ -n "$$KUBEBUILDER_ASSETS" ]; then echo "using $${TEST_KUBECONFIG:-$$KUBEBUILDER_ASSETS}"; \
	else bash tests/cluster/build.sh; fi

cluster-up: deps cluster  ## Start a local control plane in the background; kubeconfig in .cluster/kubeconfig
	$(PYTHON) tests/cluster/controlplane.py up --dir .cluster

cluster-down: deps
	$(PYTHON) tests/cluster/controlplane.py down --dir .cluster

# -- everything else ------------------------------------------------------------

lint: lock-check  ## The lock, ruff, mypy and the import layers
	ruff check .
	ruff format --check .
	mypy
	lint-imports

format: deps
	ruff check --fix .
	ruff format .

screenshots: deps system-deps  ## Retake docs/screenshots/ in the real browser
	JOBPULSE_SCREENSHOTS=1 $(PYTHON) -m pytest tests/e2e/test_screenshots.py

benchmarks: deps system-deps cluster  ## Run the benchmarks of docs/PERFORMANCE.md (about 30 minutes); results in var/benchmarks/
	mkdir -p var/benchmarks
	$(PYTHON) -m benchmarks.api_requests --json var/benchmarks/api_requests.json
	$(PYTHON) -m benchmarks.latency --json var/benchmarks/latency.json
	$(PYTHON) -m benchmarks.fanout --json var/benchmarks/fanout.json
	$(PYTHON) -m benchmarks.launches --json var/benchmarks/launches.json
	$(PYTHON) -m benchmarks.progress --json var/benchmarks/progress.json
	$(PYTHON) -m benchmarks.consoles --json var/benchmarks/consoles.json
	$(PYTHON) -m benchmarks.stampede --json var/benchmarks/stampede.json
	$(PYTHON) -m benchmarks.scaleout --json var/benchmarks/scaleout.json

deploy-jobspecs:  ## Copy jobspecs/ into deploy/jobspecs/ (kustomize reads only its own folder)
	cp jobspecs/*.yaml deploy/jobspecs/
