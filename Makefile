# Operational ML: every user-facing command. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Metaflow refuses the user `root` and an unset USER.
export METAFLOW_USER ?= $(or $(filter-out root,$(USER)),operational-ml)
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
# Metaflow keeps its local datastore in .metaflow/ under the project.
export METAFLOW_DATASTORE_SYSROOT_LOCAL ?= $(CURDIR)

# DATA, REPORTS and LABEL_COLUMN are passed on only when given (command line or environment);
# otherwise the settings decide: DATA_PATH, REPORTS_DIR and LABEL_COLUMN from the environment,
# then `.env`, then the defaults (modules/settings.py), as the README documents.
DATA ?=
REPORTS ?=
LABEL_COLUMN ?=
REPORTS_ENV = $(if $(REPORTS),REPORTS_DIR="$(REPORTS)")
LABEL_ARG = $(if $(LABEL_COLUMN),--label-column "$(LABEL_COLUMN)")
# The reports folder as the settings resolve it (for recipes that name files in it).
REPORTS_RESOLVED = $$($(REPORTS_ENV) $(PY) -m modules settings get reports_dir)
RUN_ID ?= latest
MODEL ?= svm
TOP_N ?= 30
PYTEST_ARGS ?=
# Processes `make test` runs the suite on (pytest-xdist; 1 runs it in this process, in order).
TEST_WORKERS ?= 2

RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev
# checkov gets an environment of its own: its pins clash with the project's.
CHECKOV_VENV := $(VENV)/tools/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.PHONY: help venv install install-dev lock data sample eda tune train run cards predict predict-recording serve monitor deploy-argo trigger-argo mlflow_ui mlflow_server stop \
	db_init db_upgrade test test-services test-unit lint format bench clean

help: ## List every target with a one-line description
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Reinstall only when a lock file changed (make compares the stamp's time). The .lock files
# pin every package, dependencies included, with its hashes: `make lock` writes them from
# requirements*.txt, and pip refuses anything whose hash differs.
$(RUNTIME_STAMP): requirements.lock | $(VENV)/bin/python
	@echo "Installing the runtime requirements into $(VENV) (first time: a few minutes)..."
	$(PIP) install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	@touch $@

$(DEV_STAMP): requirements-dev.lock requirements.lock | $(VENV)/bin/python
	@echo "Installing the development requirements into $(VENV)..."
	$(PIP) install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.lock
	@touch $@ $(RUNTIME_STAMP)

$(CHECKOV_STAMP): requirements-checkov.lock | $(VENV)/bin/python
	@echo "Installing checkov into $(CHECKOV_VENV)..."
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-checkov.lock
	@touch $@

venv: $(VENV)/bin/python ## Create the virtual environment .venv if missing

install: $(RUNTIME_STAMP) ## Install the runtime requirements into .venv (skipped when up to date)

install-dev: $(DEV_STAMP) $(CHECKOV_STAMP) ## Install runtime + test/lint requirements into .venv (checkov: .venv/tools/checkov)

# Universal (any OS) resolution for Python 3.11; the runtime lock is constrained by the dev
# lock, so the tests run on exactly the versions production installs.
UV_COMPILE = $(VENV)/bin/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock"

lock: install-dev ## Rewrite the requirements*.lock files (every pin, with hashes) from requirements*.txt
	$(UV_COMPILE) requirements-dev.txt -o requirements-dev.lock
	$(UV_COMPILE) --constraints requirements-dev.lock requirements.txt -o requirements.lock
	$(UV_COMPILE) requirements-checkov.txt -o requirements-checkov.lock

data: install ## Download the Kaggle dataset into data/, or build the offline sample (FORCE=1 overwrites)
	$(PY) -m modules data fetch $(if $(DATA),--out "$(DATA)") $(if $(FORCE),--force)

sample: install ## Build the simulated-EEG sample dataset offline (FORCE=1 overwrites)
	$(PY) -m modules sample $(if $(DATA),--out "$(DATA)") $(if $(FORCE),--force)

eda: install ## Write EDA and correlation reports (JSON, PNG, HTML) into reports/
	$(REPORTS_ENV) $(PY) -m analysis.eda $(if $(DATA),"$(DATA)") $(LABEL_ARG)
	$(REPORTS_ENV) $(PY) -m analysis.correlation_analysis $(if $(DATA),"$(DATA)") $(LABEL_ARG) --top-n $(TOP_N)

tune: install ## Run TuningFlow: tune the SVM and the DNN, tracked in MLflow
	$(PY) metaflows_flow/tuning_flow.py run $(if $(DATA),--data-path "$(DATA)") $(LABEL_ARG)

train: install ## Run MLPipelineFlow on the latest TuningFlow run (RUN_ID=... picks one)
	$(REPORTS_ENV) $(PY) metaflows_flow/ml_pipeline_flow.py run --tuning-flow-run-id $(RUN_ID)

run: install ## Everything on embedded defaults: venv, data, EDA, tuning, training, registry
	@$(MAKE) --no-print-directory data
	$(MAKE) --no-print-directory eda
	$(MAKE) --no-print-directory tune
	$(MAKE) --no-print-directory train
	@echo "Pipeline finished: reports in $(REPORTS_RESOLVED)/, runs and registered models in MLflow (make mlflow_ui)."

cards: install ## Save the latest runs' Metaflow cards as HTML in reports/ (tuning search, training report)
	@dir="$(REPORTS_RESOLVED)"; mkdir -p "$$dir" && \
	$(PY) metaflows_flow/tuning_flow.py card get join "$$dir/tuning_card.html" && \
	$(PY) metaflows_flow/ml_pipeline_flow.py card get report "$$dir/training_card.html"

predict: install ## Score DATA with the champion of MODEL=svm|dnn|logistic trained on DATA (or TRAINED_ON=...; MODEL_URI=... for any model)
	$(REPORTS_ENV) $(PY) -m modules predict $(if $(DATA),"$(DATA)") $(if $(MODEL_URI),--model $(MODEL_URI),--family $(MODEL) $(if $(or $(TRAINED_ON),$(DATA)),--data-path "$(or $(TRAINED_ON),$(DATA))"))

predict-recording: install ## Label a Muse recording FILE=rec.csv over time with the champion of MODEL trained on TRAINED_ON (OUT=windows.csv)
	@test -n "$(FILE)" || { echo "error: name the recording: make predict-recording FILE=rec.csv" >&2; exit 2; }
	$(REPORTS_ENV) $(PY) -m modules predict-recording "$(FILE)" $(if $(OUT),--out "$(OUT)") $(if $(MODEL_URI),--model $(MODEL_URI),--family $(MODEL) $(if $(TRAINED_ON),--data-path "$(TRAINED_ON)")) $(if $(SAMPLING_RATE),--sampling-rate $(SAMPLING_RATE))

serve: install ## Serve the champion over HTTP on 127.0.0.1 (MODEL=svm|dnn|logistic; PORT=... else SERVE_PORT, 8080)
	$(PY) -m modules serve --family $(MODEL) $(if $(or $(TRAINED_ON),$(DATA)),--data-path "$(or $(TRAINED_ON),$(DATA))") $(if $(PORT),--port $(PORT))

monitor: install ## Check the champion for drift: DATA=batch.csv, else the prediction log (FEEDBACK=labels.csv; FAIL_ON_DRIFT=1 exits 3)
	$(REPORTS_ENV) $(PY) metaflows_flow/monitoring_flow.py run --family $(MODEL) $(if $(DATA),--data-path "$(DATA)") $(if $(TRAINED_ON),--trained-on "$(TRAINED_ON)") $(if $(FEEDBACK),--feedback "$(FEEDBACK)")
	@$(REPORTS_ENV) $(PY) -m modules drift $(if $(FAIL_ON_DRIFT),--fail-on-drift)

deploy-argo: install-dev ## Compile the flows to Argo Workflows templates in build/argo (DRY_RUN=1: offline, no cluster)
	$(PY) -m modules deploy-argo $(if $(DRY_RUN),--dry-run) --out build/argo

# The GKE profile unless METAFLOW_PROFILE names another, as deploy-argo chooses. Budgets are read
# by the shell from the environment ("$$NAME") and tested with $(value ...): make never expands them.
ARGO_PROFILE = $(if $(value METAFLOW_PROFILE),,METAFLOW_PROFILE=gke METAFLOW_HOME="$(CURDIR)/infra/metaflow")

trigger-argo: install-dev ## Start TuningFlow once on Argo (after deploy-argo; SVM_MAX_CANDIDATES, DNN_MAX_TRIALS, DNN_MAX_EPOCHS, SPLIT_PROTOCOL, SEARCH_CHUNKS; RUN_ID_FILE=...)
	$(ARGO_PROFILE) $(PY) metaflows_flow/tuning_flow.py --no-pylint argo-workflows trigger \
		$(if $(value SVM_MAX_CANDIDATES),--svm-max-candidates "$$SVM_MAX_CANDIDATES") \
		$(if $(value DNN_MAX_TRIALS),--dnn-max-trials "$$DNN_MAX_TRIALS") \
		$(if $(value DNN_MAX_EPOCHS),--dnn-max-epochs "$$DNN_MAX_EPOCHS") \
		$(if $(value SPLIT_PROTOCOL),--split-protocol "$$SPLIT_PROTOCOL") \
		$(if $(value SEARCH_CHUNKS),--search-chunks "$$SEARCH_CHUNKS") \
		$(if $(value RUN_ID_FILE),--run-id-file "$$RUN_ID_FILE")

mlflow_ui: install ## Open the MLflow UI on the embedded store at http://127.0.0.1:5000
	$(PY) -m modules server ui

mlflow_server: install ## Start the MLflow tracking server (PostgreSQL + GCS when configured)
	$(PY) -m modules server start

stop: ## Stop the MLflow tracking server started by `make mlflow_server`
	@if [ -x $(PY) ]; then $(PY) -m modules server stop; else echo "Nothing to stop: no .venv"; fi

db_init: install ## Create the MLflow database and user in PostgreSQL (POSTGRES_* and POSTGRES_ADMIN_*)
	$(PY) -m modules server db-init

db_upgrade: install ## Apply MLflow's schema migrations to the PostgreSQL database
	$(PY) -m modules server db-upgrade

test-services: ## Install what the integration tests start: the PostgreSQL server (apt) when initdb is missing
	@bash infra/postgres/install_server.sh

test: install-dev test-services ## Run the whole test suite (unit, flows, integration with real servers)
	$(PY) -m pytest $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup) $(PYTEST_ARGS)

test-unit: install-dev ## Run the fast unit tests only
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: install-dev ## Check style with ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install-dev ## Format the code with ruff
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install ## Run the speed benchmarks in bench/ (figures as ratios against a same-run baseline)
	@for script in bench/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean: ## Remove generated reports, local MLflow store and Metaflow datastore (keeps data/ and .venv)
	rm -rf $(if $(wildcard $(PY)),"$(REPORTS_RESOLVED)",reports) mlruns .metaflow .run
