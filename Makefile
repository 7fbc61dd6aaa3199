# Two set-up commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test unit integration bench up down status clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/threadline demo

# pytest exits 5 when it collected no test: that is a failure, not a pass.
test: $(STAMP)
	$(BIN)/python -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected" >&2; exit 1; fi; exit $$rc

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -m "integration or e2e"

bench: $(STAMP)
	$(BIN)/threadline bench

up: $(STAMP)
	$(BIN)/threadline up

down: $(STAMP)
	$(BIN)/threadline down

status: $(STAMP)
	$(BIN)/threadline status

clean: down
	rm -rf .threadline
