// Package server exposes the FunctionService on one listen address: gRPC
// (h2c) on grpc-go's native server, and Connect, gRPC-Web, JSON and plain
// HTTP routes (status endpoint, artifact upload, /metrics, /healthz) over
// HTTP/1.1 on net/http. Domain errors become gRPC codes and stable
// error_code strings here, in one place.
package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/api/spearlet/spearletconnect"
	"github.com/spear-go/spear/internal/auth"
)

// Options configures a Server.
type Options struct {
	// MaxMessageBytes bounds one request or response message.
	MaxMessageBytes int
	// Metrics serves /metrics; may be nil.
	Metrics http.Handler
	// MetricsPublic serves /metrics without a token when Auth is on.
	MetricsPublic bool
	// Pprof serves Go's profiler under /debug/pprof/.
	Pprof bool
	// Console serves the web console's pages under /ui/ (package
	// console), beside its data routes; nil: no console.
	Console http.Handler
	// Auth, when set, makes every call but the public ones (see Scopes)
	// need a bearer token of its scope. Nil: no token is checked.
	Auth   *auth.Keys
	Logger *slog.Logger
}

// Server serves a Service.
type Server struct {
	grpc   *grpc.Server
	http   *http.Server
	health *health.Server
	log    *slog.Logger

	mu      sync.Mutex
	split   *split // set by Serve
	stopped bool   // set by Shutdown
}

// New builds the servers for svc.
func New(svc *Service, opts Options) *Server {
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = 64 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	marks := &utf8Marks{}
	z := &authz{keys: opts.Auth, scopes: Scopes(opts.MetricsPublic)}
	g := grpc.NewServer(
		grpc.MaxRecvMsgSize(opts.MaxMessageBytes),
		grpc.MaxSendMsgSize(opts.MaxMessageBytes),
		grpc.ForceServerCodecV2(newUTF8Codec(marks)),
		grpc.ChainUnaryInterceptor(unaryErrors, z.unary, marks.unary),
		grpc.ChainStreamInterceptor(streamErrors, z.stream, marks.stream),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// Reused handler goroutines keep their grown stacks: a function run
		// (wazero in particular) needs a deep one, and growing a fresh
		// goroutine's stack on every call was measurable.
		grpc.NumStreamWorkers(uint32(4*runtime.NumCPU())),
	)
	pb.RegisterFunctionServiceServer(g, grpcService{svc})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(pb.FunctionService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, hs)
	reflection.Register(g)

	mux := http.NewServeMux()
	path, h := spearletconnect.NewFunctionServiceHandler(connectService{svc}, append(jsonCodecs(),
		connect.WithInterceptors(connectErrors()),
		connect.WithReadMaxBytes(opts.MaxMessageBytes),
		connect.WithSendMaxBytes(opts.MaxMessageBytes),
		connect.WithCompressMinBytes(64<<10),
	)...)
	mux.Handle(path, h)
	z.connectPrefix = path
	svc.routes(mux)
	if opts.Console != nil {
		svc.consoleRoutes(mux, opts.Console)
	}
	if opts.Metrics != nil {
		mux.Handle(routeMetrics, opts.Metrics)
	}
	if opts.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	}
	return &Server{
		grpc:   g,
		health: hs,
		log:    opts.Logger,
		http: &http.Server{
			Handler:           errorBodies(z.handler(mux)),
			ReadHeaderTimeout: 10 * time.Second,
			MaxHeaderBytes:    1 << 20,
			ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
		},
	}
}

// Serve serves on l until Shutdown; it returns nil after a shutdown.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		_ = l.Close()
		return nil
	}
	sp := newSplit(l)
	s.split = sp
	s.mu.Unlock()
	errc := make(chan error, 2)
	go func() { errc <- s.grpc.Serve(sp.h2) }()
	go func() { errc <- s.http.Serve(sp.other) }()
	acceptErr := sp.serve()
	err := <-errc
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, grpc.ErrServerStopped) || errors.Is(err, net.ErrClosed) {
		err = nil
	}
	if err == nil && !errors.Is(acceptErr, net.ErrClosed) {
		s.mu.Lock()
		stopped := s.stopped
		s.mu.Unlock()
		if !stopped {
			return acceptErr
		}
	}
	return err
}

// Shutdown stops accepting calls and waits for running ones until ctx ends,
// then closes them.
func (s *Server) Shutdown(ctx context.Context) {
	s.mu.Lock()
	s.stopped = true
	sp := s.split
	s.mu.Unlock()
	s.health.Shutdown()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	_ = s.http.Shutdown(ctx)
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
	}
	if sp != nil {
		sp.close()
	}
}
