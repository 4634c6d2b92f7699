# ulv_spark: every target installs what it needs (a virtual env in .venv, Delta jars in ~/.m2).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONF   ?= conf/local.yaml
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast bench clean cluster-start cluster-stop

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py
	@command -v java >/dev/null || { echo "Java 17 is required (java not found on PATH)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip "setuptools>=77" wheel
	$(BIN)/pip install --quiet -e ".[dev]"
	# Pre-fetch the Delta jar (and its dependencies) into ~/.m2 so later Spark starts work offline.
	DELTA=$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("delta-spark"))'); \
	  mvn -q dependency:get -Dartifact=io.delta:delta-spark_2.13:$$DELTA \
	  || echo "warning: mvn could not pre-fetch Delta $$DELTA; Spark will resolve it at first start"
	touch $@

demo: setup
	$(BIN)/python -m tools.demo --conf $(CONF)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m bench.run_all

clean:
	rm -rf lakehouse spark-warehouse metastore_db derby.log
