# The two set-up commands: `make demo` and `make test`. Each creates (or
# reuses) the virtual environment in .venv, installing the local CPU torch and
# the RL clients of the compatibility suite (the pinned `compat` extra).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo env-demo test lint clean

# The optional object sets of the embedded scenes: animal-mnist from PyPI
# (--no-deps: its loader's tensorflow is never imported) and, as root where
# apt-get exists, Debian's dataset-fashion-mnist. Either may be missing: the
# scenes then use the sets that are there, and a note says so.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,compat]'
	$(PY) -m pip install -q --no-deps animal-mnist==0.4 \
	  || echo "note: animal-mnist not installed; scenes go without animal silhouettes"
	@if [ -d /usr/share/datasets/fashion-mnist ]; then \
	  echo "Fashion-MNIST: already installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  { apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
	    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null; }; } \
	  && echo "Fashion-MNIST: installed dataset-fashion-mnist" \
	  || echo "note: apt-get could not install dataset-fashion-mnist; scenes go without Fashion-MNIST"; \
	else \
	  echo "note: Fashion-MNIST not installed (as root: apt-get install dataset-fashion-mnist);" \
	    "scenes go without it"; \
	fi
	touch $@

# The main job: a short AB pre-training on the embedded scenes (a few minutes on
# 2 CPU cores), then the three probes against a randomly initialised encoder.
# Run again, it resumes the finished run and only probes.
DEMO_RUN ?= runs/demo
demo: $(VENV)/.installed
	$(PY) -m agents.cli pretrain --method absimclr --source scenes --max-images 2000 \
	  --steps 300 --batch-size 64 --lr 2e-3 --warmup-steps 30 --out-dir $(DEMO_RUN)
	$(PY) -m agents.cli eval --ckpt $(DEMO_RUN) --task objects --max-images 500 --out $(DEMO_RUN)/eval

# The environment demo: a random rollout on the embedded photos and a contact sheet.
env-demo: $(VENV)/.installed
	$(PY) -m vpt_env.demo

test: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) demo_out runs/demo
