# Two commands do all the set-up: `make book` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.stdet-installed
# OpenMP threads that wait by sleeping, not spinning: on a busy machine (other jobs on the cores)
# spinning threads made a mini training 3x slower; on an idle one the time is the same
OMP_WAIT_POLICY ?= PASSIVE
export OMP_WAIT_POLICY

.PHONY: book test install clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first (a CPU build here; a GPU user's own build is kept: any torch>=2.3 already installed
# satisfies the package), then stdet editable with its extras.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[book,test,data]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build book -W --keep-going

test: $(STAMP)
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env tests book

clean:
	rm -rf _build book/_build
