GO ?= go
PKGS := ./...

.PHONY: all build test demo bench vet fmt-check

all: build

build:
	$(GO) build -o bin/incpathd ./cmd/incpathd

# The whole suite: formatting, vet, the race detector over every test (the
# end-to-end ones start real nginx and php-fpm), and each Go benchmark once
# so it keeps compiling and running.
test: fmt-check vet
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	$(GO) test -run '^$$' -bench . -benchtime 1x $(PKGS)

# Figures, not pass/fail (README, Performance): the Go benchmarks in full,
# then the bench scripts. Not part of test, so not of CI.
bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)
	./bench/null-upstream.sh
	./bench/e2e.sh
	./bench/memory.sh
	./bench/syscalls.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

demo:
	./scripts/install-deps.sh
	./scripts/demo.sh
