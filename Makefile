# Development tasks. Run `make` or `make help` for the list of targets.
# The database and Redis used by the tests are set with SIGNALS_TEST_DATABASE_URL
# (default postgres://postgres@127.0.0.1:5432/test) and SIGNALS_TEST_REDIS_ADDR
# (default 127.0.0.1:6379).

GO           ?= go
# -parallel 4: many tests spend their time waiting (a lease to go unrenewed,
# a transaction held open, child processes), so more of them than the 2
# cores may run at once.
TEST_FLAGS   ?= -race -count=1 -parallel 4 -timeout 9m
COVERPROFILE ?= coverage.out

.DEFAULT_GOAL := help

.PHONY: help test quick testdb lint modules cover demo

help: ## Show this list of targets
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z0-9_.-]+:.*## / { printf "  %-10s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

# Nested modules with their own go.mod, tested and vetted beside the root.
MODULES      ?= otelsignals examples/shop dashboard/browsertest

test: testdb ## Run all tests with the race detector, root and nested modules (needs PostgreSQL and Redis; about 2 min on 2 idle cores)
	$(GO) test $(TEST_FLAGS) ./...
	@for m in $(MODULES); do echo "cd $$m && $(GO) test $(TEST_FLAGS) ./..."; (cd $$m && $(GO) test $(TEST_FLAGS) ./...) || exit 1; done

quick: ## Like test, without the race detector: quicker, for the edit-test loop
	@$(MAKE) --no-print-directory test TEST_FLAGS="-count=1 -parallel 4 -timeout 9m"

testdb: ## Create the test database (SIGNALS_TEST_DATABASE_URL) if it does not exist
	@$(GO) run ./internal/testenv/createdb

lint: ## Check formatting (gofmt), run go vet, and staticcheck if installed
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt: these files need formatting (run gofmt -w):"; \
		echo "$$unformatted"; \
		exit 1; \
	fi
	$(GO) vet ./...
	@for m in $(MODULES) bench; do echo "cd $$m && $(GO) vet ./..."; (cd $$m && $(GO) vet ./...) || exit 1; done
	@./scripts/check-modules
	@if command -v staticcheck >/dev/null 2>&1; then \
		echo staticcheck ./...; staticcheck ./...; \
	else \
		echo "note: staticcheck not found; install it with: go install honnef.co/go/tools/cmd/staticcheck@latest"; \
	fi

modules: ## Build each nested module on its own go.mod and go.sum, outside the workspace, as a user would
	./scripts/check-modules

demo: ## Run the example shop's narrated demo (starts throwaway PostgreSQL/Redis if none answer)
	./scripts/demo

cover: ## Run all tests with coverage and print the total (profile: COVERPROFILE, default coverage.out)
	$(GO) test $(TEST_FLAGS) -covermode=atomic -coverprofile=$(COVERPROFILE) ./...
	@$(GO) tool cover -func=$(COVERPROFILE) | tail -n 1

.PHONY: bench
bench: ## Run the benchmark suite (13–20 minutes on 2 cores) and write bench/results.md; BENCH_FLAGS=-quick for a smoke run of a few minutes
	cd bench && $(GO) run . -out results.md $(BENCH_FLAGS)
