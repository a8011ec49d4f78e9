# The two commands a newcomer needs: `make run` and `make test`.
.PHONY: run test bench setup clean-local

setup:
	@scripts/bootstrap.sh

run: setup
	@.venv/bin/python -m devhost.run_local

test: setup
	.venv/bin/python -m ruff check .
	.venv/bin/python -m mypy
	.venv/bin/python -m pytest

bench: setup
	.venv/bin/python -m bench

clean-local:
	rm -rf .local
