# pdsmux: `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/pdsmux
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(CACHE)/bin/staticcheck-$(STATICCHECK_VERSION)/staticcheck
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/pdsmux/pdsmux/internal/pdsmuxd.Version=$(VERSION)
FUZZTIME ?= 15s

.PHONY: help build test test-unit lint fuzz tools

help: ## show this help
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/pdsmux (static, CGO_ENABLED=0)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/pdsmux ./cmd/pdsmux

test: lint test-unit fuzz ## everything CI runs: lint, unit and integration tests with -race, a short fuzz
	@echo "make test: all checks passed"

test-unit: ## go test -race over every package (real redis-server, fake replicas)
	$(GO) test -race -count=1 -timeout 20m ./...

lint: $(STATICCHECK) ## gofmt, go vet, staticcheck, and the arm64 cross-build
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...
	GOOS=linux GOARCH=arm64 CGO_ENABLED=0 $(GO) build -o /dev/null ./...

fuzz: ## run each fuzz target for FUZZTIME
	$(GO) test ./internal/frame -run '^$$' -fuzz FuzzParsePatch -fuzztime $(FUZZTIME)

$(STATICCHECK):
	GOBIN=$(dir $(STATICCHECK)) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

tools: $(STATICCHECK) ## install the Go tools the checks use (cached under ~/.cache/pdsmux)
