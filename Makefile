# Thin aliases; the scripts in deploy/local/ do the work.
.PHONY: up down status test test-unit test-sync test-soak lint format asyncapi bench-rules bench-evaluator reliability

up:  ## install, provision and start everything, then print the API URL and the demo key
	@deploy/local/up.sh

down:  ## stop everything `make up` started
	@deploy/local/down.sh

status:
	@deploy/local/infra.sh status; deploy/local/services.sh status

test:  ## the whole suite against a real Kafka broker and a real MongoDB-compatible store
	@deploy/local/test.sh

test-unit:
	@deploy/local/bootstrap.sh && .venv/bin/python -m pytest tests/unit -q

lint:  ## ruff, mypy (strict) and the import contracts
	@deploy/local/bootstrap.sh
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy shared/src services/api/src services/evaluator/src services/sync/src cli/src tests bench
	.venv/bin/lint-imports

format:
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .

asyncapi:  ## regenerate docs/asyncapi.json from the topic contracts in audience_shared
	.venv/bin/python -m audience_shared.asyncapi docs/asyncapi.json

bench-rules:  ## compiled predicate vs a naive AST walk; writes .local/bench/rules.json
	@deploy/local/bootstrap.sh && .venv/bin/python -m bench.bench_rules

bench-evaluator:  ## sustained events/s and p50/p99 latency vs raw limits; writes .local/bench/evaluator.json (STEAL=45: a slower machine)
	@deploy/local/bootstrap.sh && .venv/bin/python -m bench.bench_evaluator $(if $(STEAL),--steal $(STEAL))

bench-resolve:  ## campaign resolve p50/p99 at 500 req/s vs the /healthz floor; writes .local/bench/resolve.json
	@deploy/local/bootstrap.sh && .venv/bin/python -m bench.bench_resolve

reliability:  ## faults, bad input and load against the real services; writes .local/bench/reliability.json (QUICK=1 for smaller runs)
	@deploy/local/bootstrap.sh && .venv/bin/python -m bench.reliability.runner $(if $(QUICK),--quick) $(if $(ONLY),--only $(ONLY))

test-sync:  ## only the sync service end to end (fake Klaviyo, CSV, schedules, unloads)
	@deploy/local/test.sh -m sync_integration

test-soak:  ## a 1,000,000-row CSV import, printing and bounding both processes' peak memory (long)
	@AUDIENCES_TEST_IMPORT_ROWS=1000000 deploy/local/test.sh tests/integration/test_sync_csv.py -k many_rows -s
