# The two commands of the README. Both set everything up on a fresh machine.
#   make run   — the main job: the explorer app (Voilà) with the embedded model, on 127.0.0.1
#   make test  — the whole test suite (the browser test included: installs Debian's chromium with apt if missing)
# More: make lab (the explorer notebook in JupyterLab), make bench, make clean.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8866
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run lab demo test chromium bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	@echo "The VLE workbench: open http://$(HOST):$(PORT)/ in a browser (Ctrl-C stops it)"
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m voila notebooks/explorer.ipynb --no-browser \
		--Voila.ip=$(HOST) --port=$(PORT)

lab: $(STAMP)
	@echo "JupyterLab on http://$(HOST):$(PORT)/lab/tree/notebooks/explorer.ipynb (the token is printed below)"
	$(VENV)/bin/jupyter lab --no-browser --ip=$(HOST) --port=$(PORT) notebooks/explorer.ipynb \
		$(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

demo: $(STAMP)
	$(VENV)/bin/vle-workbench demo

# The browser test drives Debian's Chromium; Playwright must never download a browser of its own.
chromium:
	@command -v chromium >/dev/null 2>&1 || ($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium)

test: $(STAMP) chromium
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_forward.py

clean:
	rm -rf $(VENV) build *.egg-info
