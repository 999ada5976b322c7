# Two commands do all set-up on a fresh Debian machine (root or sudo): `make repro`, `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PKGS := dataset-fashion-mnist openclipart-png fonts-noto-color-emoji unicode-data openssh-server openssh-client
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export DVC_NO_ANALYTICS := 1

.PHONY: setup apt repro test bench clean-venv

setup: apt $(VENV)/.installed

# The pipeline reads these Debian packages' files (Fashion-MNIST, clip art, emoji); tests/test_remote.py runs sshd.
apt:
	@if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || \
	    [ ! -d /usr/share/openclipart/png ] || \
	    [ ! -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || \
	    [ ! -f /usr/share/unicode/emoji/emoji-test.txt ] || \
	    [ ! -x /usr/sbin/sshd ]; then \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PKGS); \
	fi

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

repro: setup
	. $(VENV)/bin/activate && dvc repro

test: setup
	. $(VENV)/bin/activate && python -m pytest -q -n 2 --dist loadfile  # one test file per worker: module fixtures stay whole

bench: setup
	. $(VENV)/bin/activate && python -m bench.throughput --quick && python -m bench.decode

clean-venv:
	rm -rf $(VENV)
