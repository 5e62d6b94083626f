# anodetwin: two commands on a fresh machine, `make demo` and `make test`.
# Every target bootstraps .venv (Python >= 3.12) and installs the package once;
# a second run reinstalls nothing unless pyproject.toml changed.

VENV      ?= .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.anodetwin-installed
DEMO_OUT  ?= demo-output
PYTEST_ARGS ?=
NPROC     ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all venv demo test test-all test-mpi bench validation clean distclean help

all: demo

help:
	@echo "make demo      install (once) and run the main job on built-in data"
	@echo "make test      install (once) and run the test suite (MPI tests with mpiexec -n 2)"
	@echo "make test-all  the test suite including tests marked slow"
	@echo "make bench     benchmarks; numbers land in benchmarks/RESULTS.md"
	@echo "make validation  the reference electrode through the reference protocol (all cores,"
	@echo "               NPROC=N to choose; RESUME=1 continues a run, FRESH=1 starts it again),"
	@echo "               then its DVC closed loop; validation/reference_electrode/"
	@echo "               results.md, loop.md and report/"

$(PY):
	@PYBIN=$$(bash scripts/find-python.sh) || exit 1; \
	echo "creating $(VENV) with $$PYBIN"; \
	"$$PYBIN" -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q -e ".[test]"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/anodetwin demo --out $(DEMO_OUT)

test: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest $(PYTEST_ARGS)

test-all: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -m "slow or not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) benchmarks/run.py --out benchmarks/RESULTS.md

validation: $(STAMP)
	$(VENV)/bin/mpiexec -n $(NPROC) $(PY) validation/reference_electrode/run.py \
		$(if $(RESUME),--resume) $(if $(FRESH),--fresh)
	$(PY) validation/reference_electrode/closed_loop.py

clean:
	rm -rf $(DEMO_OUT) .pytest_cache build src/*.egg-info

distclean: clean
	rm -rf $(VENV)
