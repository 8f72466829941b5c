package server

import (
	"net/http"
	"strings"

	"connectrpc.com/connect"

	"github.com/spear-go/spear/internal/errdefs"
)

// errorBodies gives every HTTP error answer of h a Connect JSON error body
// ({"code","message","details"}, and the spear-error-code header), as the
// node's own errors have: those that net/http's mux (404, 405) and
// Connect's handler (415 without a Content-Type it serves, 405) write
// bare or as text. The status stays what it was.
func errorBodies(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ew := &errorBodyWriter{ResponseWriter: w}
		h.ServeHTTP(ew, r)
		if ew.pending != 0 {
			writeStatusError(w, r, ew.pending, ew.text.String())
		}
	})
}

// errorBodyWriter holds back an error answer written without a JSON body
// (pending: its status), keeping the start of the text it had.
type errorBodyWriter struct {
	http.ResponseWriter
	wrote   bool
	pending int
	text    strings.Builder
}

// maxErrorText bounds the text of a held-back error kept for its message.
const maxErrorText = 512

func (w *errorBodyWriter) WriteHeader(code int) {
	if w.wrote || code < http.StatusOK {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.wrote = true
	if code < http.StatusBadRequest || hasErrorBody(w.Header()) {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.pending = code
}

func (w *errorBodyWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.pending == 0 {
		return w.ResponseWriter.Write(b)
	}
	if room := maxErrorText - w.text.Len(); room > 0 {
		w.text.Write(b[:min(len(b), room)])
	}
	return len(b), nil
}

// Flush flushes what is not held back.
func (w *errorBodyWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok && w.pending == 0 {
		f.Flush()
	}
}

// Unwrap gives http.ResponseController the underlying writer.
func (w *errorBodyWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// hasErrorBody reports whether an answer with header h carries its own
// machine-readable body: JSON (a Connect error, or a route's answer) or a
// gRPC or Connect stream.
func hasErrorBody(h http.Header) bool {
	ct := h.Get("Content-Type")
	for _, p := range []string{"application/json", "application/grpc", "application/connect+"} {
		if strings.HasPrefix(ct, p) {
			return true
		}
	}
	return false
}

// writeStatusError writes a Connect JSON error for an answer of status
// code, keeping that status: a message saying what was wrong with the
// request, else the text the handler wrote.
func writeStatusError(w http.ResponseWriter, r *http.Request, code int, text string) {
	h := w.Header()
	h.Del("Content-Length")
	h.Del("X-Content-Type-Options")
	// Without a Content-Type the writer chooses Connect's unary JSON
	// error, whatever the request claimed to be.
	plain := *r
	plain.Header = r.Header.Clone()
	plain.Header.Del("Content-Type")
	_ = connect.NewErrorWriter().Write(statusWriter{w, code}, &plain, toConnect(statusError(r, h, code, text)))
}

// statusError is the error an answer of status code stands for.
func statusError(r *http.Request, h http.Header, code int, text string) error {
	route := r.Method + " " + r.URL.Path
	switch code {
	case http.StatusNotFound:
		return errdefs.NotFound.New("no such route: %s (the API: /spearlet.FunctionService/METHOD over Connect or gRPC, and the REST routes under /api/v1/; see README)", route)
	case http.StatusMethodNotAllowed:
		return errdefs.Unimplemented.New("method %s is not served at %s: allowed %s", r.Method, r.URL.Path, h.Get("Allow"))
	case http.StatusUnsupportedMediaType:
		return errdefs.InvalidArgument.New("%s: Content-Type %q is not served: send Content-Type: application/json (Connect JSON) or application/proto, or call over gRPC",
			route, r.Header.Get("Content-Type"))
	}
	msg := strings.TrimSpace(text)
	if msg == "" {
		msg = http.StatusText(code)
	}
	return classOfStatus(code).New("%s: %s", route, msg)
}

// classOfStatus is the error class of an HTTP status, as README's table
// maps them: INVALID_ARGUMENT for another 4xx, INTERNAL for another 5xx.
func classOfStatus(code int) errdefs.Code {
	switch code {
	case http.StatusUnauthorized:
		return errdefs.Unauthenticated
	case http.StatusForbidden:
		return errdefs.PermissionDenied
	case http.StatusNotFound:
		return errdefs.NotFound
	case http.StatusConflict:
		return errdefs.AlreadyExists
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		return errdefs.ResourceExhausted
	case http.StatusNotImplemented:
		return errdefs.Unimplemented
	case http.StatusServiceUnavailable:
		return errdefs.Unavailable
	case http.StatusGatewayTimeout:
		return errdefs.DeadlineExceeded
	}
	if code < http.StatusInternalServerError {
		return errdefs.InvalidArgument
	}
	return errdefs.Internal
}

// statusWriter writes a fixed status whatever it is asked to.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s statusWriter) WriteHeader(int) { s.ResponseWriter.WriteHeader(s.code) }
