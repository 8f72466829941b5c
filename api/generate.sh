#!/usr/bin/env bash
# Regenerates the Go code for the contract. Needs protoc and the plugins:
#   apt-get install protobuf-compiler
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
#   go install connectrpc.com/connect/cmd/protoc-gen-connect-go@v1.21.1
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$(go env GOPATH)/bin:$PATH"
protoc -I . \
  --go_out=. --go_opt=paths=source_relative \
  --go-grpc_out=. --go-grpc_opt=paths=source_relative,require_unimplemented_servers=false \
  --connect-go_out=. --connect-go_opt=paths=source_relative,simple=true \
  spearlet/spearlet.proto
