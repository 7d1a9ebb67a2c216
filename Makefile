# Two commands do all the set-up on a fresh Linux machine (Python >= 3.10):
#   make sample   installs into .venv and restores samples/sample.mp4 -> out/sample_restored.mp4
#   make test     installs into .venv (with test extras) and runs the test suite
# PIP_FIND_LINKS is cleared so pip takes torch and torchvision from the package index as a
# matching pair, never a stray local torch wheel without its torchvision.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP_ENV := PIP_FIND_LINKS=

.PHONY: install x11-test-tools browser-test-tools sample test test-slow bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP_ENV) $(BIN)/python -m pip install -q --upgrade pip
	$(PIP_ENV) $(BIN)/python -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

sample: install
	mkdir -p out
	$(BIN)/vidrestore samples/sample.mp4 out/sample_restored.mp4 --config fast --overwrite
	$(BIN)/python -c "import av; c = av.open('out/sample_restored.mp4'); print('out/sample_restored.mp4:', *(f'{s.type} {s.codec_context.name} {s.frames} frames' if s.type == 'video' else f'{s.type} {s.codec_context.name}' for s in c.streams))"

# The webcam window test runs under Xvfb and sends keys with xdotool. Install them where
# apt-get is usable (root); elsewhere the test skips with its reason (and fails when $CI is set).
x11-test-tools:
	@if ! command -v Xvfb >/dev/null || ! command -v xdotool >/dev/null; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing xvfb and xdotool for the window test"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb xdotool >/dev/null; } \
	      || echo "could not install them: the window test will skip"; \
	  else \
	    echo "Xvfb/xdotool missing and apt-get not usable: the window test will skip"; \
	  fi; \
	fi

# The browser test drives Debian's chromium through Playwright (browser downloads are not
# possible here, so never `playwright install`). Installed like the window test's tools.
browser-test-tools:
	@if ! command -v chromium >/dev/null; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing chromium for the browser test"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	      || echo "could not install it: the browser test will skip"; \
	  else \
	    echo "chromium missing and apt-get not usable: the browser test will skip"; \
	  fi; \
	fi

test: install x11-test-tools browser-test-tools
	$(BIN)/python -m pytest

test-slow: install
	$(BIN)/python -m pytest -m slow

bench: install
	$(BIN)/python bench/pipeline_overhead.py --json bench/results/pipeline_overhead_cpu.json

clean:
	rm -rf $(VENV) out
