package server

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/spear-go/spear/api/spearlet"
	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/execution"
	"github.com/spear-go/spear/internal/executor"
)

// The plain HTTP routes, as ServeMux patterns (the scope each needs is in
// authz.go).
const (
	routeStatus     = "GET /api/v1/executions/{id}/status"
	routeCancel     = "POST /api/v1/executions/{id}/cancel"
	routeOutput     = "GET /api/v1/executions/{id}/output"
	routeUploadPut  = "PUT /api/v1/artifacts"
	routeUploadPost = "POST /api/v1/artifacts"
	routeHealthz    = "GET /healthz"
	routeMetrics    = "GET /metrics"
)

// routes registers the plain HTTP routes on mux.
func (s *restAPI) routes(mux *http.ServeMux) {
	mux.HandleFunc(routeStatus, s.handleStatus)
	mux.HandleFunc(routeCancel, s.handleCancel)
	mux.HandleFunc(routeOutput, s.handleOutput)
	mux.HandleFunc(routeUploadPut, s.handleUpload)
	mux.HandleFunc(routeUploadPost, s.handleUpload)
	mux.HandleFunc(routeHealthz, func(w http.ResponseWriter, r *http.Request) {
		resp, err := s.node.GetHealth(r.Context(), &pb.GetHealthRequest{})
		if err != nil {
			writeError(w, r, err)
			return
		}
		code := http.StatusOK
		if resp.Status != "healthy" {
			code = http.StatusServiceUnavailable
		}
		writeProto(w, r, code, resp)
	})
}

var jsonOpts = protojson.MarshalOptions{EmitUnpopulated: false, UseProtoNames: false}

func writeProto(w http.ResponseWriter, r *http.Request, code int, m proto.Message) {
	b, err := jsonOpts.Marshal(m)
	if err != nil {
		writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
	_, _ = w.Write([]byte("\n"))
}

// writeError answers as Connect answers the same error: one HTTP status
// per error class everywhere, a Connect JSON error body (code, message, an
// ErrorInfo detail) and the error code in the spear-error-code header.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	_ = connect.NewErrorWriter().Write(w, r, toConnect(err))
}

// StatusJSON is an execution's final record as completion callbacks carry
// it: the JSON form of GetExecutionStatusResponse, with the execution and
// task ids, result and logs included, as the status endpoint answers.
func StatusJSON(r *execution.Record) []byte {
	b, err := jsonOpts.Marshal(statusOf(r, true, true))
	if err != nil {
		return []byte("{}")
	}
	return b
}

// handleStatus answers GET /api/v1/executions/{id}/status with the JSON
// form of GetExecutionStatusResponse, result included. Query: logs=true
// adds logs; wait=DURATION (at most 60s) waits for a terminal state first.
// An unknown execution is a 404 Connect error (EXECUTION_NOT_FOUND), as
// every HTTP error is.
func (s *restAPI) handleStatus(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	q := r.URL.Query()
	ctx := r.Context()
	if ws := q.Get("wait"); ws != "" {
		d, err := time.ParseDuration(ws)
		if err != nil || d < 0 {
			writeError(w, r, errdefs.InvalidWait.New("wait=%q: want a duration such as 30s", ws))
			return
		}
		if d > 0 {
			wctx, cancel := context.WithTimeout(ctx, min(d, 60*time.Second))
			_, err = s.mgr.Views.Wait(wctx, id)
			// The wait running out is not an error: the status as it is
			// now is the answer.
			waitOver := wctx.Err() != nil && ctx.Err() == nil
			cancel()
			if err != nil && !waitOver && !errdefs.ExecutionNotFound.Is(err) {
				writeError(w, r, err)
				return
			}
		}
	}
	logs, _ := strconv.ParseBool(q.Get("logs"))
	resp, err := s.execs.GetExecutionStatus(ctx, &pb.GetExecutionStatusRequest{ExecutionId: id, IncludeResult: true, IncludeLogs: logs})
	if err != nil {
		writeError(w, r, err)
		return
	}
	if !resp.Found {
		writeError(w, r, errdefs.ExecutionNotFound.New("%s", resp.Message))
		return
	}
	writeProto(w, r, http.StatusOK, resp)
}

// handleOutput answers GET /api/v1/executions/{id}/output with the
// execution's whole output, whatever its size, streamed from the store (a
// running execution's output follows live until it ends). For a finished
// execution Content-Length is the output's size and the headers
// Spear-Output-Sha256 and Spear-Status describe it.
func (s *restAPI) handleOutput(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rec, err := s.mgr.Views.Get(ctx, r.PathValue("id"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	if rec.Status.Terminal() {
		size := rec.OutputSize
		if !rec.OutputStored {
			size = int64(len(rec.Output)) // all there is (OUTPUT_NOT_STORED keeps the head)
		}
		h.Set("Content-Length", strconv.FormatInt(size, 10))
		h.Set("Spear-Output-Sha256", rec.OutputSHA256)
		h.Set("Spear-Status", rec.Status.String())
	}
	started := false
	_, err = s.mgr.Views.Attach(ctx, rec.ID, func(c executor.Chunk) error {
		started = true
		_, err := w.Write(c.Data)
		return err
	})
	if err != nil && !started {
		h.Del("Content-Length")
		writeError(w, r, err)
	}
}

// handleCancel answers POST /api/v1/executions/{id}/cancel?force=true.
func (s *restAPI) handleCancel(w http.ResponseWriter, r *http.Request) {
	force, _ := strconv.ParseBool(r.URL.Query().Get("force"))
	resp, err := s.execs.CancelExecution(r.Context(), &pb.CancelExecutionRequest{
		ExecutionId: r.PathValue("id"), Reason: r.URL.Query().Get("reason"), Force: force,
	})
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeProto(w, r, http.StatusOK, resp)
}

// handleUpload streams a request body into the artifact store:
// PUT /api/v1/artifacts?name=NAME&checksum=sha256:HEX.
func (s *restAPI) handleUpload(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := checkChecksum(q.Get("checksum")); err != nil {
		writeError(w, r, err)
		return
	}
	digest, size, err := s.store.Artifacts.Put(r.Context(), q.Get("name"), r.Body, q.Get("checksum"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeProto(w, r, http.StatusCreated, &pb.UploadArtifactResponse{Location: "artifact:" + digest, Checksum: digest, SizeBytes: size})
}
