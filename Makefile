# Switchboard. `make run` and `make test` are all a newcomer needs.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test lint bench install migrate clean chromium

$(STAMP): pyproject.toml
	@python=$$(./scripts/find-python.sh) || exit 1; \
	if [ ! -x $(PY) ]; then echo "creating $(VENV) with $$python"; "$$python" -m venv $(VENV); fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --progress-bar on -e '.[dev]'
	rm -f $(VENV)/.installed-*; touch $(STAMP)

# The meeting-type classifier is trained from the labelled set it ships with (a no-op
# when var/ holds one trained on the current data).
install: $(STAMP)
	@$(PY) manage.py train_meeting_classifier

migrate: install
	$(PY) manage.py migrate --noinput

run: migrate
	$(PY) manage.py runstack

# The browser tests use Debian's Chromium (never a downloaded one).
chromium:
	@./scripts/ensure-chromium.sh

test: install chromium
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

bench: install
	$(PY) bench/run.py
	$(PY) bench/context.py --write

clean:
	rm -rf $(VENV) var/*.sqlite3* var/*.db*
