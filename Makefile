# Two set-up commands: `make report` and `make test`. Both create .venv if it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
# one BLAS/torch thread per parallel notebook worker (2 workers on 2 cores)
THREADS = OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1

.PHONY: install test report lab notebooks pretrain sae sae-seed1 sae-wide expression-objective-full parity clean-cache upgrade-deps bench

install: $(VENV)/.installed
$(VENV)/.installed: settings.ini setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $@

# Re-resolve every dependency to its newest allowed release and record it (then rerun make report and make test).
upgrade-deps:
	rm -rf .venv-upgrade && $(PYTHON) -m venv .venv-upgrade
	.venv-upgrade/bin/pip install -q torch==2.13.0 && .venv-upgrade/bin/pip install -q -e ".[dev]"
	{ head -2 constraints.txt; .venv-upgrade/bin/pip freeze | grep -v '^-e\|cellsteer' | sed 's/^torch==2.13.0+cpu/torch==2.13.0/'; } > constraints.new && mv constraints.new constraints.txt
	rm -rf .venv-upgrade

test: install
	$(BIN)/nbdev_export
	@if git rev-parse --git-dir >/dev/null 2>&1 && [ -n "$$(git status --porcelain -- cellsteer_nb)" ]; then \
	  echo "cellsteer_nb/ differs from what nbs/ export: run nbdev_export and commit"; git status --porcelain -- cellsteer_nb; exit 1; fi
	$(THREADS) $(BIN)/nbdev_test --n_workers 2
	$(THREADS) $(BIN)/pytest -q -n 2 --dist loadfile tests   # two workers, one test file each at a time

# The report notebook alone: it computes every step (cached on disk by inputs, configuration and code) and writes reports/
# (the feature browser in reports/browser/ included); then a screenshot of the browser in headless Chromium for the report and README.
report: install
	$(BIN)/python tools/run_notebooks.py
	@if [ -x /usr/bin/chromium ]; then $(BIN)/python tools/browser_screenshots.py --reports reports; \
	else echo "no /usr/bin/chromium (apt-get install chromium): the browser's screenshot in reports/figures/ was not retaken"; fi

# JupyterLab on the notebooks (nbs/), on this machine only (127.0.0.1); it prints the address with its token. --allow-root: CI and containers run as root.
lab: install
	$(BIN)/jupyter lab --notebook-dir=nbs --ip=127.0.0.1 --no-browser --allow-root

# Every numbered notebook in order, full configuration (demonstrations and tests included; about half an hour cold).
notebooks: install
	$(BIN)/python tools/run_notebooks.py --all

pretrain: install
	$(BIN)/python -c "from cellsteer_nb.pretrain import train_default; train_default()"

sae: install
	$(BIN)/python -c "from cellsteer_nb.sae import train_default_sae; train_default_sae()"

# The default SAE's recipe with seed 1: the report's stability check of the moved set across SAE seeds.
sae-seed1: install
	$(BIN)/python -c "from cellsteer_nb.sae import train_default_sae, committed_sae_recipe; from cellsteer_nb.core import ASSETS; train_default_sae(out=ASSETS/'sae_l12_seed1', cfg=committed_sae_recipe(seed=1))"

# Wide SAEs at the seed's width (5,120 = 80 x 64 features) and beyond (16,384), the default recipe otherwise: the solver's test bed
# (bench/bench_solve.py, `cellsteer report --sae DIR`). Large, so written to the cache, not committed (about 10 / 40 min on 1 core).
SAE_WIDE_DIR ?= $${CELLSTEER_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/cellsteer_nb}/sae_wide
SAE_WIDE_EXPANSIONS ?= 80 256
sae-wide: install
	for e in $(SAE_WIDE_EXPANSIONS); do OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -c "from cellsteer_nb.sae import train_default_sae, SAETrainConfig; train_default_sae(out='$(SAE_WIDE_DIR)/sae_l12_x$$e', cfg=SAETrainConfig(expansion=$$e))" || exit 1; done

# The long reference fit of the expression objective and the final-layer variant (unmasked readout, about 15 min on 1 core), and
# on the masked-context readout a reference on a fixed sample of 12 source cells plus the report's masked configuration with and
# without early stopping (about 25 min on 1 idle core), against the reduced configurations the report runs: writes
# reports/expression_objective_full.json, which the report links. EXPROBJ_PARTS=masked reruns only the masked part.
EXPROBJ_PARTS ?= unmasked,masked
expression-objective-full: install
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python tools/expression_objective_full.py --parts $(EXPROBJ_PARTS)

# Parity of our model with modelgenerator's CellFoundationModel (tiny random config); a throw-away venv, not part of `make test`.
parity:
	test -x .venv-parity/bin/python || $(PYTHON) -m venv .venv-parity
	.venv-parity/bin/pip install -q torch==2.13.0 transformers==4.38.0 "numpy<2" safetensors tqdm
	PYTHONPATH=$(CURDIR) .venv-parity/bin/python tools/parity_aido.py

# Benchmarks against what users would pick instead (bench/RESULTS.md, bench/results.json), one thread; not part of `make test`.
# Item 1b uses the wide SAE of `make sae-wide` when it is in the cache (synthetic Grams otherwise).
# Makes the SAELens side venv if missing. About 35 min on 2 idle cores, ~10 min of it `make report` cold, warm and warm under cProfile in a temporary
# clone; `make bench BENCH_ARGS=--skip-e2e` keeps the previous end-to-end numbers.
bench: install
	test -x .venv-saelens/bin/python || { $(PYTHON) -m venv .venv-saelens && .venv-saelens/bin/pip install -q torch==2.13.0 && .venv-saelens/bin/pip install -q sae-lens; }
	$(BIN)/python -c "import skglm, celer" 2>/dev/null || $(BIN)/pip install -q --no-deps skglm celer   # item 1b's alternatives, nothing else changed
	$(THREADS) $(BIN)/python bench/run_all.py $(BENCH_ARGS)

clean-cache:
	rm -rf $${CELLSTEER_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/cellsteer_nb}
