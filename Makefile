# paddle_rtseg: `make test` and `make demo` set everything up from nothing (see README.md).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
VENV26 := .venv-paddle26
STAMP26 := $(VENV26)/.installed
PYTEST_ARGS ?=
# test files run in this many processes (pytest-xdist, one file per process at a time: module
# fixtures are built once; a worker that dies ends the run instead of being replaced, which can
# hang xdist); 1 runs them in this process
PYTEST_JOBS ?= 2
XDIST = $(if $(filter-out 1,$(PYTEST_JOBS)),-n $(PYTEST_JOBS) --dist loadfile --max-worker-restart 0,)

.PHONY: venv test unit arm-setup smoke-paddle26 demo bench clean

$(STAMP): requirements.txt setup.py runtime/setup.py scripts/find_python310.sh
	@python310="$$(scripts/find_python310.sh)" && \
	  echo "Creating $(VENV) with $$python310" && "$$python310" -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e runtime -e .
	@touch $(STAMP)

$(STAMP26): requirements-paddle26.txt setup.py runtime/setup.py scripts/find_python310.sh
	@python310="$$(scripts/find_python310.sh)" && "$$python310" -m venv $(VENV26)
	$(VENV26)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-paddle26.txt
	$(VENV26)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e runtime -e .
	@touch $(STAMP26)

venv: $(STAMP)

## make test: the whole suite (unit, parity, CLIs, exports, ARM kernels) and the Paddle 2.6 smoke test.
## The ARM tests need PADDLE_LITE_ARM_DIR (a Paddle Lite armv8 library) and what arm-setup installs.
## The set-up steps run side by side (pip downloads, apt): the main venv with arm-setup, then
## .venv-paddle26 is built in the background while the suite runs (its log: .venv-paddle26.log);
## tests/test_paddle26_suite.py waits for it and runs compat_tests/ there, on one of the workers.
test:
	@$(MAKE) --no-print-directory -j2 --output-sync=target $(STAMP) arm-setup
	@$(MAKE) --no-print-directory $(STAMP26) > $(VENV26).log 2>&1 & venv26=$$!; \
	  RTSEG_PADDLE26_VENV=$(VENV26) RTSEG_PADDLE26_BUILD_PID=$$venv26 \
	    $(PY) -m pytest $(XDIST) $(PYTEST_ARGS); status=$$?; \
	  if ! wait $$venv26; then cat $(VENV26).log; echo "make: building $(VENV26) failed" >&2; exit 1; fi; \
	  exit $$status

## make unit: the suite without the slow (real-size / export / end-to-end) tests.
unit: $(STAMP)
	$(PY) -m pytest -m "not slow" $(XDIST) $(PYTEST_ARGS)

## make arm-setup: qemu, the aarch64 cross compiler, cmake, arm64 libjpeg/libpng (as root with apt).
arm-setup:
	@scripts/setup_arm.sh

smoke-paddle26: $(STAMP26)
	$(VENV26)/bin/python -m pytest -p no:cacheprovider -c compat_tests/pytest.ini compat_tests

## make demo: synthetic data -> train RTFormer-Slim (a few minutes) -> evaluate -> predict PNGs.
demo: $(STAMP)
	$(PY) -m paddle_rtseg.cli.demo --save_dir output/demo

bench: $(STAMP)
	$(PY) -m paddle_rtseg.benchmarks.bench

clean:
	rm -rf $(VENV) $(VENV26) output build *.egg-info
