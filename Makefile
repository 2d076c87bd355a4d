# jobpulse — the two commands: `make run` (the app on its embedded default) and `make test` (everything).
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: run test deps app-deps system-deps cluster cluster-up cluster-down deploy-jobspecs screenshots benchmarks lint format

run: app-deps  ## Serve the app at http://127.0.0.1:8000 (gunicorn gevent worker, local runner, SQLite)
	$(PYTHON) -m gunicorn wsgi:app

test: deps system-deps cluster lint  ## Install what the tests need, lint, and run every test
	$(PYTHON) -m pytest

app-deps:
	$(PIP) install -q -e .

deps:
	$(PIP) install -q -e '.[test,dev]'

system-deps:  ## Debian packages the tests drive for real (curl, ...)
	bash tests/system-deps.sh

cluster:  ## Build (or reuse) the cached control plane binaries, unless KUBEBUILDER_ASSETS or TEST_KUBECONFIG is set
	@if [ -n "$$TEST_KUBECONFIG" ] || [ -n "$$KUBEBUILDER_ASSETS" ]; then echo "using $${TEST_KUBECONFIG:-$$KUBEBUILDER_ASSETS}"; \
	else bash tests/cluster/build.sh; fi

cluster-up: cluster  ## Start a local control plane in the background; kubeconfig in .cluster/kubeconfig
	$(PYTHON) tests/cluster/controlplane.py up --dir .cluster

cluster-down:
	$(PYTHON) tests/cluster/controlplane.py down --dir .cluster

screenshots:  ## Retake docs/screenshots/ in the real browser
	JOBPULSE_SCREENSHOTS=1 $(PYTHON) -m pytest tests/e2e/test_screenshots.py

benchmarks: deps cluster  ## Run the four benchmarks of docs/PERFORMANCE.md (about 15 minutes); results in var/benchmarks/
	$(PIP) install -q -e '.[bench]'
	mkdir -p var/benchmarks
	$(PYTHON) -m benchmarks.api_requests --json var/benchmarks/api_requests.json
	$(PYTHON) -m benchmarks.latency --json var/benchmarks/latency.json
	$(PYTHON) -m benchmarks.fanout --json var/benchmarks/fanout.json
	$(PYTHON) -m benchmarks.launches --json var/benchmarks/launches.json

deploy-jobspecs:  ## Copy jobspecs/ into deploy/jobspecs/ (kustomize reads only its own folder)
	cp jobspecs/*.yaml deploy/jobspecs/

lint:
	ruff check .
	ruff format --check .
	mypy
	lint-imports

format:
	ruff check --fix .
	ruff format .
