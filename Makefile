# Two set-up commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The set-up step: Kafka's jars, the schema registry build, the tools the tests use. Re-run when
# its recipes change; `threadline setup` itself skips a step whose inputs are unchanged.
SETUP  := .threadline/setup.stamp
SETUP_INPUTS := deploy/local/pom.xml $(shell find deploy/local/registry -type f -not -path '*/target/*' -not -path '*/stub-repo/*' 2>/dev/null) \
                deploy/compose/tools/build-compose.sh deploy/k8s/crds/pom.xml

.PHONY: setup demo test unit integration bench up down status clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

$(SETUP): $(STAMP) $(SETUP_INPUTS)
	$(BIN)/threadline setup
	mkdir -p $(dir $(SETUP)) && touch $(SETUP)

setup: $(SETUP)

demo: $(SETUP)
	$(BIN)/threadline demo

# pytest exits 5 when it collected no test: that is a failure, not a pass.
test: $(SETUP)
	$(BIN)/python -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected" >&2; exit 1; fi; exit $$rc

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

integration: $(SETUP)
	$(BIN)/python -m pytest -m "integration or e2e"

bench: $(SETUP)
	$(BIN)/threadline bench

up: $(SETUP)
	$(BIN)/threadline up

down: $(STAMP)
	$(BIN)/threadline down

status: $(STAMP)
	$(BIN)/threadline status

clean: down
	rm -rf .threadline
