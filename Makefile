# The two commands of README.md: `make demo` and `make test`. Each creates or reuses .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.flowfit-installed

.PHONY: demo demo-image test docs figures clean

# torch is installed first and pinned: a plain `torch` requirement would pull a multi-GB
# CUDA build; 2.13.0 is the CPU wheel this project is tested with.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/flowfit train --data moons --flow realnvp --layers 6 --out runs/demo --force

# N(0, I) becoming flowfit's own picture along a continuous flow trained by flow matching.
demo-image: $(STAMP)
	$(BIN)/flowfit train --data logo --flow cnf --objective fm --out runs/logo --force

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples docs_hooks
	$(BIN)/ruff format --check src tests benchmarks examples docs_hooks
	$(BIN)/python -m pytest
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The documentation site (MkDocs), into site/.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The README's pictures: the demo's own outputs, copied into docs/.
figures: demo demo-image
	cp runs/demo/samples.png runs/demo/density.png runs/demo/layers.png runs/demo/flow.gif \
	   runs/demo/loss.png runs/demo/loglik.png docs/
	$(BIN)/flowfit animate --model runs/logo --out docs/logo.gif --frames 60 --seed 0 --force
	cp runs/logo/layers.png docs/logo_layers.png
	$(BIN)/flowfit explore --model runs/demo --out runs/demo/explore.html --force
	$(BIN)/python examples/explore_screenshot.py runs/demo/explore.html docs/explore.png

clean:
	rm -rf $(VENV) runs
