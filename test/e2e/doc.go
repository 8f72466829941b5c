// Package e2e holds Spear's end-to-end tests. They build the spear binary
// once, start real `spear serve` processes on loopback ports with their own
// data directories, and drive them only over the network: the generated
// grpc-go client, Connect JSON and the plain HTTP routes via net/http, the
// spear CLI, grpcurl (with the hand-written .proto, no reflection) and curl.
//
// Run with: go test -race -count=1 ./test/e2e/
//
// SPEAR_E2E_BIN, when set, names a prebuilt spear binary to use instead of
// building one. SPEAR_E2E_FULL=1 runs the full variant of the tests that
// have a shorter default (TestClusterChaos: 1000 executions over 60 s
// instead of 300 over 20 s).
package e2e
