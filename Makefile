# Everything a newcomer needs; `make` lists the targets. Only Python 3.11+ is required on the machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
TENANT ?= demo
ROLES  ?= scheduler.editor
SUBJECT ?= >

.DEFAULT_GOAL := help
.PHONY: help venv run test lint migrate api worker token sub bench docker helm-lint stop clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP) ## create .venv and install the project with its dev tools

run: $(STAMP) ## start Postgres + NATS (embedded unless POSTGRES_URL/NATS_URL), migrations, the API and 2 workers
	$(BIN)/python -m shared.dev run

test: $(STAMP) ## run the whole suite against throwaway real Postgres and NATS servers
	$(BIN)/python -m pytest

lint: $(STAMP) ## ruff, mypy and hadolint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

migrate: $(STAMP) ## apply pending migrations (to POSTGRES_URL, else the embedded server)
	$(BIN)/python -m shared.dev migrate

api: $(STAMP) ## serve only the API (against POSTGRES_URL, else the embedded server)
	$(BIN)/python -m shared.dev api

worker: $(STAMP) ## run one worker (against POSTGRES_URL/NATS_URL, else the embedded servers)
	$(BIN)/python -m shared.dev worker

token: $(STAMP) ## print a dev token: make token TENANT=t1 ROLES=scheduler.editor
	@$(BIN)/python -m shared.dev token --tenant '$(TENANT)' --roles '$(ROLES)'

sub: $(STAMP) ## print messages on a NATS subject of the local stack: make sub SUBJECT='demo.>'
	@$(BIN)/python -m shared.dev sub '$(SUBJECT)'

MODE  ?= users
PEERS ?=
BENCH_ARGS ?=
bench: $(STAMP) ## fires/s and lag as users see them (MODE=direct|api for diagnostics, PEERS=1 adds APScheduler 3)
	@if [ -n "$(PEERS)" ]; then $(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[peers]'; fi
	exec $(BIN)/python -m bench --mode $(MODE) $(if $(PEERS),--peers,) $(BENCH_ARGS)

docker: ## build the image (needs a Docker engine)
	docker build -t scheduler:latest .

helm-lint: ## lint the Helm chart (needs helm)
	@if command -v helm >/dev/null 2>&1; then \
		helm lint --strict deploy/helm/scheduler --values deploy/helm/scheduler/ci/lint-values.yaml; \
	else \
		echo "helm-lint: helm is not installed, skipping (make test still checks the chart: tests/unit/test_helm_values.py)"; \
	fi

stop: $(STAMP) ## stop embedded servers left running under .data/
	$(BIN)/python -m shared.dev stop

clean: ## stop embedded servers and delete .data/ and .venv/
	-@[ -x $(BIN)/python ] && $(BIN)/python -m shared.dev stop
	rm -rf .data $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
