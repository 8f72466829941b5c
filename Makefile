# Spear: the two commands a newcomer needs are `make run` and `make test`.
GO       ?= go
DATA_DIR ?= .spear
LISTEN   ?= 127.0.0.1:50052

.PHONY: run build sample-image test test-short vet generate samples bench bench-quick fuzz soak clean

## run: build and start a node with the sample functions registered
run: build sample-image
	./bin/spear serve --data-dir $(DATA_DIR) --listen $(LISTEN) --samples samples

## build: build the spear binary into bin/
build:
	$(GO) build -o bin/spear ./cmd/spear

## sample-image: build the sample container image, when a Docker engine answers
sample-image:
	@if docker info >/dev/null 2>&1; then \
	  CGO_ENABLED=0 $(GO) build -o samples/docker/build/fn ./samples/docker/fn && \
	  docker build -q -t spear-sample-upper:latest samples/docker >/dev/null && \
	  echo "built image spear-sample-upper:latest"; \
	else echo "no Docker engine: skipping the sample container function"; fi

## test: vet, then every test with the race detector
test: vet
	$(GO) test -race -count=1 -timeout 15m ./...

## vet: go vet and a gofmt check
vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## generate: regenerate the Go code of the API contract (needs protoc and plugins)
generate:
	./api/generate.sh

## samples: rebuild the WASM samples from C (needs clang, lld, wasi-libc)
samples:
	$(MAKE) -C samples/wasm

## bench: Spear against bare baselines, side by side (a few minutes)
bench:
	$(GO) run ./bench/cmd/spear-bench

## bench-quick: the same, shorter (under a minute)
bench-quick:
	$(GO) run ./bench/cmd/spear-bench --quick

## fuzz: run each fuzz target for FUZZTIME (CI: a short fixed time)
FUZZTIME ?= 30s
# Each target as package:Name.
FUZZ_TARGETS := ./internal/server/:FuzzInvokeRequest ./internal/server/:FuzzParameters \
	./internal/server/:FuzzStatusRoute ./internal/server/:FuzzConnectJSON ./internal/confine/:FuzzPath \
	./internal/auth/:FuzzAuthorization
fuzz:
	@for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; f=$${t#*:}; \
	  $(GO) test -run XXX -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; done

## soak: mixed load on a real node for SOAK_DURATION, checking for leaks
SOAK_DURATION ?= 10m
soak:
	$(GO) run ./tools/soak/cmd/spear-soak --duration $(SOAK_DURATION)

clean:
	rm -rf bin $(DATA_DIR)
