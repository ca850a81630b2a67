GO ?= go
PKGS := ./...

.PHONY: all build test fuzz demo demo-deps demo-build bench vet fmt-check compose-test

all: build

build:
	$(GO) build -o bin/incpathd ./cmd/incpathd

# The whole suite: formatting, vet, the race detector over every test (the
# end-to-end ones start real nginx and php-fpm), and each Go benchmark once
# so it keeps compiling and running.
test: fmt-check vet
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	$(GO) test -run '^$$' -bench . -benchtime 1x $(PKGS)
	$(MAKE) --no-print-directory fuzz

# Each native fuzz target briefly, from its seeds in the package's
# testdata/fuzz (go runs one -fuzz target per invocation). A crash fails the
# run and leaves the input in testdata/fuzz to become a regression test.
# The budgets are execution counts, 5 to 15 s each on 2 cores: a -fuzztime
# duration trips a race in Go 1.26's fuzz coordinator at the deadline
# (golang/go#75804, fixed in Go 1.27), which fails a run with a bare
# "context deadline exceeded" and no crasher. For a long run, set FUZZTIME
# for every target: make fuzz FUZZTIME=10m.
FUZZ_TARGETS := fcgi:FuzzReader:150000x fcgi:FuzzDecodeParams:150000x fcgi:FuzzWriteParamsFrom:30000x \
	fcgi:FuzzServer:20000x \
	rewrite:FuzzRewrite:100000x rewrite:FuzzINI:200000x

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; rest=$${t#*:}; name=$${rest%%:*}; budget=$${rest#*:}; \
		[ -z "$(FUZZTIME)" ] || budget="$(FUZZTIME)"; \
		echo "fuzz: $$name in ./$$pkg for $$budget"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $$budget ./$$pkg; \
	done

# Figures, not pass/fail (README, Performance): the Go benchmarks in full,
# then the bench scripts, after installing what they start (wrk, haproxy,
# nginx's stream module, strace) if it is missing. Not part of test, so not
# of CI.
bench:
	./scripts/install-deps.sh bench
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

# The request that crosses a flip, through nginx alone and through incpathd
# (README, Try it). The packages the demo needs (nginx-light, php-fpm, curl)
# install while incpathd compiles: on a fresh machine the first build also
# compiles the standard library, about a minute of CPU, and the install
# waits on the network and dpkg, so side by side they take the time of the
# longer one.
demo:
	@$(MAKE) --no-print-directory -j2 demo-deps demo-build
	INCPATHD=bin/incpathd ./scripts/demo.sh

demo-deps:
	./scripts/install-deps.sh demo

# build, with go's download messages kept for a failure.
demo-build:
	@echo "$(GO) build -o bin/incpathd ./cmd/incpathd"
	@out=$$($(GO) build -o bin/incpathd ./cmd/incpathd 2>&1) || { echo "$$out" >&2; exit 1; }

# docker/compose.yaml run for real (a Docker engine, Docker Compose v2 and
# the images are brought if missing; see the script), then the Kubernetes
# manifest checked.
compose-test:
	./scripts/compose-test.sh
