# Two commands for a fresh machine: `make demo` and `make test`.
# Each creates .venv when missing, installs torch==2.13.0 (CPU build) first, then this
# package with its test extras.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ZARR2_VENV ?= .venv-zarr2
ZARR2_STAMP := $(ZARR2_VENV)/.installed-stamp
DATA ?= data
PYTEST_ARGS ?=

.PHONY: install demo test test-zarr2 test-main clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# A second, small venv that runs the cellmap/ suite under zarr-python 2.18
# (the zarr the official CellMap toolbox pins); the main venv has zarr 3.x.
$(ZARR2_STAMP): Makefile
	$(PYTHON) -m venv $(ZARR2_VENV)
	$(ZARR2_VENV)/bin/python -m pip install --upgrade pip
	$(ZARR2_VENV)/bin/python -m pip install 'zarr>=2.18,<3' 'numcodecs<0.16' 'numpy>=1.24,<2.1' scipy pandas pyyaml 'dask[array]' fire tqdm matplotlib pytest pytest-timeout
	touch $(ZARR2_STAMP)

demo: install
	$(BIN)/cellmap_sample $(DATA)
	$(BIN)/convert_zarr_to_nifti
	$(BIN)/run_auto3dseg --mode analyze
	@echo
	@echo "Conversion report: $(DATA)/nifti/conversion_report.md"
	@echo "Data statistics:   $(DATA)/work_dir/datastats_report.md"

test-main: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-zarr2: $(ZARR2_STAMP)
	PYTHONPATH=$(CURDIR) $(ZARR2_VENV)/bin/python -m pytest tests/cellmap -p no:cacheprovider $(PYTEST_ARGS)

test: test-main test-zarr2

clean-demo:
	rm -rf $(DATA)
