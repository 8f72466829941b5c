# Spear: the two commands a newcomer needs are `make run` and `make test`.
GO       ?= go
DATA_DIR ?= .spear
LISTEN   ?= 127.0.0.1:50052

.PHONY: run build sample-image test test-short vet generate samples bench bench-quick fuzz soak cluster cluster-down clean

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
	$(GO) test -race -count=1 -timeout 30m ./...

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
	./internal/auth/:FuzzAuthorization ./internal/graph/:FuzzValidate
fuzz:
	@for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; f=$${t#*:}; \
	  $(GO) test -run XXX -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; done

## soak: mixed load on a real node for SOAK_DURATION, checking for leaks
SOAK_DURATION ?= 10m
soak:
	$(GO) run ./tools/soak/cmd/spear-soak --duration $(SOAK_DURATION)

## cluster: start a local 3-node cluster (embedded NATS servers routed to each other; docs/CLUSTER.md)
CLUSTER_DIR ?= .cluster
# Node i (1..3) serves the API on 127.0.0.1:5006i and routes on 127.0.0.1:6281+i-1.
CLUSTER_ROUTES := nats://127.0.0.1:6281,nats://127.0.0.1:6282,nats://127.0.0.1:6283
cluster: build
	@mkdir -p $(CLUSTER_DIR)
	@for i in 1 2 3; do \
	  pid=$$(cat $(CLUSTER_DIR)/node$$i.pid 2>/dev/null); \
	  if [ -n "$$pid" ] && kill -0 $$pid 2>/dev/null; then \
	    echo "node$$i runs already (pid $$pid): make cluster-down first"; exit 1; fi; \
	done
	@for i in 1 2 3; do \
	  samples="--artifact-root samples"; [ $$i = 1 ] && samples="--samples samples"; \
	  nohup ./bin/spear serve --node-id node$$i --data-dir $(CLUSTER_DIR)/node$$i \
	    --listen 127.0.0.1:5006$$i --nats-cluster 127.0.0.1:628$$i --nats-routes $(CLUSTER_ROUTES) \
	    --sandbox-uid-base $$((2000000 + i * 1024)) --shutdown-grace 5s $$samples \
	    >$(CLUSTER_DIR)/node$$i.log 2>&1 & echo $$! >$(CLUSTER_DIR)/node$$i.pid; \
	done
	@echo "starting 3 nodes (logs: $(CLUSTER_DIR)/node1.log ..node3.log); they form a JetStream cluster..."
	@for i in 1 2 3; do \
	  n=0; until ./bin/spear --addr 127.0.0.1:5006$$i health >/dev/null 2>&1; do \
	    n=$$((n + 1)); \
	    if [ $$n -gt 150 ] || ! kill -0 $$(cat $(CLUSTER_DIR)/node$$i.pid) 2>/dev/null; then \
	      echo "node$$i did not start; the end of its log:"; tail -n 20 $(CLUSTER_DIR)/node$$i.log; \
	      $(MAKE) --no-print-directory cluster-down; exit 1; fi; \
	    sleep 0.2; \
	  done; \
	done
	@echo "cluster up: node1 127.0.0.1:50061, node2 127.0.0.1:50062, node3 127.0.0.1:50063 (3 copies of everything)"
	@echo "try:  ./bin/spear --addr 127.0.0.1:50061 task list"
	@echo "      ./bin/spear --addr 127.0.0.1:50062 invoke echo --mode async --input hello"
	@echo "      ./bin/spear --addr 127.0.0.1:50063 exec get <execution id>"
	@echo "stop: make cluster-down (state stays in $(CLUSTER_DIR); make clean removes it)"

## cluster-down: stop the local cluster's nodes; nothing of it keeps running
cluster-down:
	@for i in 1 2 3; do \
	  f=$(CLUSTER_DIR)/node$$i.pid; [ -f $$f ] || continue; pid=$$(cat $$f); \
	  if kill -TERM $$pid 2>/dev/null; then \
	    n=0; while kill -0 $$pid 2>/dev/null && [ $$n -lt 100 ]; do sleep 0.1; n=$$((n + 1)); done; \
	    kill -KILL $$pid 2>/dev/null && echo "node$$i (pid $$pid) killed: it did not stop within 10 s"; \
	    echo "node$$i stopped"; fi; \
	  rm -f $$f; \
	done
	@# (the pattern's [1-3] keeps it from matching this very recipe)
	@if pgrep -f "spear serve --node-id node[1-3] --data-dir $(CLUSTER_DIR)/" >/dev/null; then \
	  echo "still running:"; pgrep -a -f "spear serve --node-id node[1-3] --data-dir $(CLUSTER_DIR)/"; exit 1; \
	else echo "no node of the cluster runs"; fi

clean:
	rm -rf bin $(DATA_DIR) $(CLUSTER_DIR)
