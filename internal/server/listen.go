package server

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/spear-go/spear/internal/retry"
)

// http2Preface starts every HTTP/2 connection with prior knowledge (h2c),
// which is how gRPC clients speak plaintext.
var http2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// split divides one listener in two by the first bytes of each connection:
// HTTP/2 with prior knowledge goes to grpc-go's own server (its fast native
// transport), everything else (HTTP/1.1: Connect, JSON, the REST routes,
// metrics) to net/http.
type split struct {
	base  net.Listener
	h2    *subListener
	other *subListener
	once  sync.Once
}

func newSplit(l net.Listener) *split {
	s := &split{base: l}
	s.h2 = &subListener{parent: s, conns: make(chan net.Conn), closed: make(chan struct{})}
	s.other = &subListener{parent: s, conns: make(chan net.Conn), closed: make(chan struct{})}
	return s
}

// serve accepts connections until the base listener fails for good; it
// returns that error (net.ErrClosed after close).
func (s *split) serve() error {
	failures := 0
	for {
		c, err := s.base.Accept()
		if err != nil {
			// Like net/http: back off on temporary errors (EMFILE, ...)
			// instead of giving up the listener.
			var te interface{ Temporary() bool }
			if !errors.Is(err, net.ErrClosed) && errors.As(err, &te) && te.Temporary() {
				failures++
				time.Sleep(retry.Backoff{Base: 5 * time.Millisecond, Max: time.Second}.Delay(failures))
				continue
			}
			s.close()
			return err
		}
		failures = 0
		go s.route(c)
	}
}

// route reads just enough of a connection to classify it.
func (s *split) route(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 0, len(http2Preface))
	tmp := make([]byte, len(http2Preface))
	for len(buf) < len(http2Preface) {
		n, err := c.Read(tmp[:len(http2Preface)-len(buf)])
		buf = append(buf, tmp[:n]...)
		if !bytes.HasPrefix(http2Preface, buf) {
			break
		}
		if err != nil {
			c.Close()
			return
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	pc := &prefixConn{Conn: c, prefix: buf}
	target := s.other
	if bytes.Equal(buf, http2Preface) {
		target = s.h2
	}
	select {
	case target.conns <- pc:
	case <-target.closed:
		c.Close()
	}
}

func (s *split) close() {
	s.once.Do(func() {
		s.base.Close()
		close(s.h2.closed)
		close(s.other.closed)
	})
}

type subListener struct {
	parent *split
	conns  chan net.Conn
	closed chan struct{}
}

func (l *subListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *subListener) Close() error { l.parent.close(); return nil }

func (l *subListener) Addr() net.Addr { return l.parent.base.Addr() }

// prefixConn replays the bytes read to classify the connection.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
