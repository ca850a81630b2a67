GO ?= go
PKGS := ./...

.PHONY: all build test fuzz demo bench vet fmt-check

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

# Each native fuzz target for FUZZTIME, from its seeds in the package's
# testdata/fuzz (go runs one -fuzz target per invocation). A crash fails
# the run and leaves the input in testdata/fuzz to become a regression test.
# Run longer by hand: make fuzz FUZZTIME=10m.
FUZZTIME ?= 20s
FUZZ_TARGETS := fcgi:FuzzReader fcgi:FuzzDecodeParams fcgi:FuzzServer rewrite:FuzzRewrite rewrite:FuzzINI

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz: $$name in ./$$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) ./$$pkg; \
	done

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

demo:
	./scripts/install-deps.sh
	./scripts/demo.sh
