# pdsmux: `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/pdsmux
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(CACHE)/bin/staticcheck-$(STATICCHECK_VERSION)/staticcheck
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/pdsmux/pdsmux/internal/pdsmuxd.Version=$(VERSION)
# Each fuzz target runs a number of executions (about 10 s each on a quiet
# 2-core machine), not a duration: a -fuzztime duration races Go's fuzz
# coordinator on a loaded machine and fails with a bare "context deadline
# exceeded" and no failing input (golang/go#75804, fixed in Go 1.27; seen
# in CI here). FUZZTIME=60s or FUZZTIME=1000000x sets all six.
FUZZTIME ?=
fuzz_n = $(if $(FUZZTIME),$(FUZZTIME),$(1))
BENCH_FLAGS ?=

.PHONY: help build demo test test-unit e2e deps lint fuzz bench tools

help: ## show this help
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/pdsmux (static, CGO_ENABLED=0)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/pdsmux ./cmd/pdsmux

demo: ## run two PDS replicas, pdsmux and Caddy on loopback and print the merged stream (Ctrl-C stops)
	@# built, not `go run`: go run exits 1 after Ctrl-C even when the demo exits 0
	$(GO) build -o bin/pdsmux-demo ./cmd/pdsmux-demo
	bin/pdsmux-demo

test: lint test-unit fuzz e2e ## everything CI runs: lint, unit + integration tests with -race, a short fuzz, end to end
	@echo "make test: all checks passed"

test-unit: ## go test -race over every package (real redis-server, libsql server and Caddy, fake replicas), then the timing checks and the full-size failover suite without -race
	bash scripts/deps.sh turso caddy >/dev/null
	$(GO) test -race -count=1 -timeout 20m ./...
	$(GO) test -count=1 -run 'TestSubscribe_SlowConsumer' ./internal/fanout
	$(GO) test -count=1 -run 'TestHA_SentinelFailover$$|TestHA_ReplicationLinkCut$$' ./internal/pdsmuxd

lint: $(STATICCHECK) ## gofmt, go vet, staticcheck, and the arm64 cross-build
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...
	GOOS=linux GOARCH=arm64 CGO_ENABLED=0 $(GO) build -o /dev/null ./...

e2e: deps ## end to end with real peers: reference PDS replicas, Caddy, the strict indigo relay
	$(GO) test -tags e2e -count=1 -timeout 30m -v ./e2e 2>&1 | grep -E '^(=== RUN|--- |PASS|FAIL|ok)|_test.go:' ; test $${PIPESTATUS[0]} -eq 0

bench: ## pdsmux (defaults) beside indigo's rainbow (disk, tmpfs, memory) and the Redis ceiling in one run (~15 min); writes bench/RESULTS.md (BENCH_FLAGS=-quick: a smoke run into bench/out/quick.md)
	mkdir -p bench/out
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 20000x ./internal/frame ./internal/cursor ./internal/fanout ./internal/verify | tee bench/out/micro.txt
	$(GO) run ./bench -micro bench/out/micro.txt -profile bench/out $(BENCH_FLAGS)

deps: ## install the peers (Node 22, @atproto/pds, Caddy, indigo relay) into ~/.cache/pdsmux once
	bash scripts/deps.sh node pds caddy relay >/dev/null

fuzz: ## run each fuzz target for its count of executions (or FUZZTIME)
	$(GO) test ./internal/frame -run '^$$' -fuzz FuzzParsePatch -fuzztime $(call fuzz_n,100000x)
	$(GO) test ./internal/verify -run '^$$' -fuzz FuzzCheck -fuzztime $(call fuzz_n,30000x)
	$(GO) test ./internal/cursor -run '^$$' -fuzz FuzzNewEvent -fuzztime $(call fuzz_n,50000x)
	$(GO) test ./internal/cursor -run '^$$' -fuzz FuzzToEntry -fuzztime $(call fuzz_n,60000x)
	$(GO) test ./internal/fanout -run '^$$' -fuzz FuzzSubscribeQuery -fuzztime $(call fuzz_n,50000x)
	$(GO) test ./internal/crawl -run '^$$' -fuzz FuzzCheckHostname -fuzztime $(call fuzz_n,60000x)

$(STATICCHECK):
	GOBIN=$(dir $(STATICCHECK)) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

tools: $(STATICCHECK) ## install the Go tools the checks use (cached under ~/.cache/pdsmux)
