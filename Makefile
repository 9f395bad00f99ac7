# Scalebox — run `make help` for the targets.
SHELL := /bin/bash
GO    ?= go
BIN   ?= bin
PKGS  ?= ./...
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION) -X github.com/scalebox-hpc/scalebox/internal/cli.Version=$(VERSION)
STATICCHECK_VERSION ?= v0.8.2

.PHONY: help build test test-short lint bench chaos demo clean

help: ## Show this help.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## Build static binaries (CGO_ENABLED=0) into ./bin.
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

test: ## Vet, then run every test with -race (SQLite and a private PostgreSQL server).
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

test-short: ## Tests without -race, for quick iteration.
	$(GO) test -count=1 $(PKGS)

lint: ## go vet + staticcheck (installed on first use).
	$(GO) vet $(PKGS)
	@command -v staticcheck >/dev/null || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$$($(GO) env GOPATH)/bin/staticcheck $(PKGS)

bench: ## Run the benchmark suite with its peers (Dask, Snakemake, a Slurm job array); raw output in bench.out, figures in bench.json and BENCHMARKS.md.
	scripts/bench-peers.sh
	set -o pipefail; ( $(GO) test -run '^$$' -bench 'Store/LeaseComplete' -benchtime 200000x -timeout 30m ./store/sqlite ./store/postgres && \
	  $(GO) test -run '^$$' -bench 'Store/AddBatch' -benchtime 1000000x -timeout 30m ./store/sqlite ./store/postgres && \
	  $(GO) test -run '^$$' -bench . -benchtime 1x -timeout 90m ./bench/ ) 2>&1 | tee bench.out
	$(GO) run ./bench/report -in bench.out -json bench.json -md BENCHMARKS.md

chaos: ## The fault-injection suite at full size: a 3-stage pipeline of 3 × 3,400 tasks while the broker, pilots and PostgreSQL are killed.
	SCALEBOX_CHAOS_TASKS=$${SCALEBOX_CHAOS_TASKS:-3400} $(GO) test -race -count=1 -run TestChaos -v -timeout 60m ./e2e 2>&1 | tee chaos.out

demo: build ## Start a broker on the embedded SQLite store and drive it with the CLI.
	scripts/demo.sh

clean: ## Remove build outputs.
	rm -rf $(BIN) bench.out bench.json chaos.out
