# busmesh — build, test, lint, generate, benchmark.
#   make test                          what CI and the README run
#   make test T=TestHTTP PKG=./test/...  one test
GO       ?= go
PKG      ?= ./...
T        ?=
# An execution count, not a duration: Go 1.26's fuzz coordinator can fail a
# duration-bounded run with a bare "context deadline exceeded" when a busy
# machine starves its workers at the deadline (go.dev/issue/75804, fixed
# in Go 1.27); a count has no deadline to race.
FUZZTIME ?= 50000x
# Each new interesting input is minimized for at most this many executions:
# at the default (60 s each) a run that finds several can take minutes,
# printing "0/sec" (FuzzInject: 142 s for 9 new inputs).
FUZZMINIMIZE ?= 2000x
FUZZFLAGS = -run '^$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE)
GOLANGCI ?= github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0

.PHONY: all build test fuzz fault interop-soak lint proto bench discovery-bench hostile clean image image-prebuilt

# The container image (deploy/docker). CONTAINER is docker when its daemon
# answers, else podman or buildah; all three take these arguments.
VERSION   ?= dev
IMAGE     ?= busmesh:$(VERSION)
CONTAINER ?= $(shell docker info >/dev/null 2>&1 && echo docker || command -v podman || command -v buildah || echo docker)

all: build

# grpcnotrace leaves out grpc-go's golang.org/x/net/trace, whose templates
# keep every exported method of the binary alive (about 5 MB less idle
# memory per sidecar). The image adds nodev: no busmesh dev and no embedded
# NATS server, which sidecars joining a shared broker never use (about 3 MB
# less; README, "Benchmark").
TAGS       ?= grpcnotrace
IMAGE_TAGS ?= nodev,grpcnotrace

build:
	$(GO) build -tags $(TAGS) -o bin/busmesh ./cmd/busmesh

# The race detector on everything, then a short fuzz run of the envelope
# decoder. With T set, only the named tests run. One package at a time
# (-p 1): the end-to-end, fault and hostile suites each load the machine's
# cores with real processes, and their timing bounds assume they do not
# share them with another suite.
test:
ifeq ($(T),)
	$(GO) test -race -count=1 -p 1 -timeout 40m $(PKG)
	# A position-independent, externally linked build has a RELRO region,
	# which internal/residency must leave alone (the image's build has none).
	$(GO) test -count=1 -buildmode=pie -ldflags=-linkmode=external ./internal/residency/
	cd deploy/validate && $(GO) test -count=1 ./...
	$(MAKE) fuzz
else
	$(GO) test -race -count=1 -run '$(T)' $(PKG)
endif

# The long end-to-end cases: a 60-second Server-Sent Events stream through
# the mesh on every broker (a service with timeout: none).
test-long:
	BUSMESH_TEST_LONG=1 $(GO) test -race -count=1 -run 'TestHTTPLongStream' -v ./test/e2e/

fuzz:
	$(GO) test $(FUZZFLAGS) -fuzz '^FuzzDecode$$' ./internal/envelope/
	$(GO) test $(FUZZFLAGS) -fuzz '^FuzzVerifyMAC$$' ./internal/identity/
	$(GO) test $(FUZZFLAGS) -fuzz '^FuzzLoadCert$$' ./internal/identity/
	$(GO) test $(FUZZFLAGS) -fuzz '^FuzzOpen$$' ./internal/secure/
	$(GO) test $(FUZZFLAGS) -fuzz '^FuzzCheckAnnouncement$$' ./internal/discovery/
	$(GO) test $(FUZZFLAGS) -fuzz '^FuzzInject$$' ./internal/inject/

# The fault suite (test/fault) with a longer load after each fault, and the
# Kafka broker-restart case, a known failure (make test runs it short).
fault:
	$(GO) test -count=1 -timeout 30m -v -run '^TestFault$$' ./test/fault/ -fault.duration=20s -fault.kafka-restart

# grpc-go's interop soak cases through the mesh on every broker, at full
# size: 8 threads, 1,000 channels each (the e2e suite runs them small).
interop-soak:
	$(GO) test -count=1 -timeout 30m -run '^TestInterop$$' ./test/e2e/ -interop.soak_iterations=8000 -interop.soak_threads=8

lint:
	$(GO) vet ./...
	test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.'))" || { gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.'); exit 1; }
	$(GO) run $(GOLANGCI) run ./...

# Regenerates the committed protobuf code; needs protoc (Debian:
# protobuf-compiler). The Go plugins are pinned in go.mod as tools.
proto:
	protoc -I proto \
		--plugin=protoc-gen-go="$$($(GO) tool -n protoc-gen-go)" \
		--go_out=. --go_opt=module=github.com/busmesh/busmesh \
		proto/busmesh/v1/envelope.proto proto/busmesh/v1/discovery.proto
	protoc -I proto \
		--plugin=protoc-gen-go="$$($(GO) tool -n protoc-gen-go)" \
		--plugin=protoc-gen-go-grpc="$$($(GO) tool -n protoc-gen-go-grpc)" \
		--plugin=protoc-gen-grpc-gateway="$$($(GO) tool -n protoc-gen-grpc-gateway)" \
		--go_out=. --go_opt=module=github.com/busmesh/busmesh \
		--go-grpc_out=. --go-grpc_opt=module=github.com/busmesh/busmesh \
		--grpc-gateway_out=. --grpc-gateway_opt=module=github.com/busmesh/busmesh \
		--grpc-gateway_opt=grpc_api_configuration=proto/busmesh/v1/admin_http.yaml \
		proto/busmesh/v1/admin.proto
	protoc -I test/testpb \
		--plugin=protoc-gen-go="$$($(GO) tool -n protoc-gen-go)" \
		--plugin=protoc-gen-go-grpc="$$($(GO) tool -n protoc-gen-go-grpc)" \
		--go_out=. --go_opt=module=github.com/busmesh/busmesh \
		--go-grpc_out=. --go-grpc_opt=module=github.com/busmesh/busmesh \
		test/testpb/echo.proto

# Go micro-benchmarks, then busmesh side by side with its floors on every
# broker (bench-results/latest.md). BENCHFLAGS=-quick for a smoke run.
BENCHFLAGS ?=
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./internal/... ./ambassador/... ./adapter/...
	$(GO) run ./test/bench $(BENCHFLAGS)

# Builds the image with deploy/docker/Dockerfile (a Go build stage, then
# scratch).
image:
	$(CONTAINER) build -f deploy/docker/Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE) .

# The same image from a binary built here: needs no base image from a
# registry.
image-prebuilt:
	mkdir -p bin/image
	CGO_ENABLED=0 $(GO) build -trimpath -tags $(IMAGE_TAGS) -ldflags "-s -w -X main.version=$(VERSION)" -o bin/image/busmesh ./cmd/busmesh
	cp /etc/ssl/certs/ca-certificates.crt bin/image/
	$(CONTAINER) build -f deploy/docker/Dockerfile.prebuilt -t $(IMAGE) bin/image

# Discovery at scale: one ambassador beside N simulated instances in M
# services, on a nats-server of its own (CPU, RSS, messages, join/leave,
# restart; ratios against an empty mesh).
discovery-bench:
	$(GO) test -run '^$$' -bench '^BenchmarkDiscovery$$' -benchtime 1x -timeout 30m ./test/hostile/

# The hostile suites, longer than in CI (NATS on 127.0.0.1:4222).
hostile:
	BUSMESH_HOSTILE_LONG=1 $(GO) test -count=1 -timeout 30m -v ./test/hostile/

clean:
	rm -rf bin
