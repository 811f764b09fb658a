# tealtab: set-up, demo and tests. Everything installs into .venv/.
#   make demo   install, then complete a sample file through the real server
#   make test   install, then run the whole test suite
#   make vsix   build the VS Code extension (editors/vscode/*.vsix)
PYTHON ?= python3
VENV   ?= .venv
# The CPU build of PyTorch. On a CUDA machine: make TORCH_SPEC=torch demo
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test vsix bench-latency clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[builtin,dev,editors]"
	touch $@

demo: setup
	$(BIN)/tealtab demo

test: setup
	$(BIN)/python -m pytest -ra

# The VS Code extension as editors/vscode/tealtab-VERSION.vsix: Node 24 from the editors extra,
# TypeScript and @vscode/vsce at the versions in editors/vscode/package-lock.json.
vsix: setup
	$(BIN)/python editors/vscode/scripts/toolchain.py vsix

bench-latency: setup
	$(BIN)/python benchmarks/latency.py

clean:
	rm -rf $(VENV) build *.egg-info
