# Everything a newcomer needs; `make` lists the targets. Only Python 3.11+ is required on the machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
TENANT ?= demo
ROLES  ?= scheduler.editor
SUBJECT ?= >

.DEFAULT_GOAL := help
.PHONY: help venv browser run test coverage screenshots lint migrate api worker token sub bench soak docker helm-lint stop clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP) ## create .venv and install the project with its dev tools

run: $(STAMP) ## start Postgres + NATS (embedded unless POSTGRES_URL/NATS_URL), migrations, the API and 2 workers
	$(BIN)/python -m devstack run

test: $(STAMP) lint browser ## lint, then run the whole suite against throwaway real Postgres and NATS servers (and Chromium); fails below the coverage floor
	$(BIN)/python -m pytest --cov --cov-report=term:skip-covered

coverage: $(STAMP) browser ## the whole suite with a line-by-line coverage report (terminal and htmlcov/index.html)
	$(BIN)/python -m pytest --cov --cov-report=term-missing:skip-covered --cov-report=html

# The console and docs tests drive Debian's Chromium through chromedriver (nothing is downloaded at test time).
# As root with apt-get they are installed here; elsewhere the tests skip, and this says why (in CI they must run).
browser: ## install chromium + chromium-driver for the browser tests where the machine allows it
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "browser tests: installing chromium and chromium-driver (apt-get)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
			|| echo "*** browser tests: apt-get could not install chromium/chromium-driver; they will be SKIPPED (and FAIL under CI=true) ***"; \
	else \
		echo "*********************************************************************************************"; \
		echo "*** browser tests will be SKIPPED: chromium and chromedriver are not installed, and this    ***"; \
		echo "*** is not root with apt-get to install them. On Debian/Ubuntu run as root:                 ***"; \
		echo "***     apt-get install chromium chromium-driver                                            ***"; \
		echo "*** (elsewhere: any Chromium/Chrome plus its matching chromedriver on PATH)                 ***"; \
		echo "*********************************************************************************************"; \
	fi

screenshots: $(STAMP) browser ## refresh the console and API docs screenshots in docs/screenshots/
	CONSOLE_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -q tests/integration/test_console_browser.py

lint: $(STAMP) ## ruff, mypy and hadolint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

migrate: $(STAMP) ## apply pending migrations (to POSTGRES_URL, else the embedded server)
	$(BIN)/python -m devstack migrate

api: $(STAMP) ## serve only the API (against POSTGRES_URL, else the embedded server)
	$(BIN)/python -m devstack api

worker: $(STAMP) ## run one worker (against POSTGRES_URL/NATS_URL, else the embedded servers)
	$(BIN)/python -m devstack worker

token: $(STAMP) ## print a dev token: make token TENANT=t1 ROLES=scheduler.editor
	@$(BIN)/python -m devstack token --tenant '$(TENANT)' --roles '$(ROLES)'

sub: $(STAMP) ## print messages on a NATS subject of the local stack: make sub SUBJECT='demo.>'
	@$(BIN)/python -m devstack sub '$(SUBJECT)'

MODE  ?= users
PEERS ?=
BENCH_ARGS ?=
bench: $(STAMP) ## fires/s and lag as users see them (MODE=direct|api for diagnostics, PEERS=1 adds APScheduler 3)
	@if [ -n "$(PEERS)" ]; then $(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[peers]'; fi
	exec $(BIN)/python -m bench --mode $(MODE) $(if $(PEERS),--peers,) $(BENCH_ARGS)

SOAK_MINUTES ?= 10
soak: $(STAMP) ## fixed load (50% of measured capacity) for SOAK_MINUTES (10): lag, RSS and table sizes per minute
	SOAK_MINUTES=$(SOAK_MINUTES) $(BIN)/python -m bench.soak

docker: ## build the image (needs a Docker engine)
	docker build -t scheduler:latest .

helm-lint: ## lint the Helm chart (needs helm)
	@if command -v helm >/dev/null 2>&1; then \
		helm lint --strict deploy/helm/scheduler --values deploy/helm/scheduler/ci/lint-values.yaml; \
	else \
		echo "helm-lint: helm is not installed, skipping (make test still checks the chart: tests/unit/test_helm_values.py)"; \
	fi

stop: $(STAMP) ## stop embedded servers left running under .data/
	$(BIN)/python -m devstack stop

clean: ## stop embedded servers and delete .data/ and .venv/
	-@[ -x $(BIN)/python ] && $(BIN)/python -m devstack stop
	rm -rf .data $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
