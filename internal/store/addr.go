package store

import (
	"fmt"
	"net"
	"strconv"

	"github.com/spear-go/spear/internal/errdefs"
)

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("NATS listen address %q: %w: %w", addr, errdefs.ErrInvalidArgument, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("NATS listen port %q: %w", p, errdefs.ErrInvalidArgument)
	}
	return host, port, nil
}
