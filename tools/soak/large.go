package soak

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	pb "github.com/spear-go/spear/api/spearlet"
)

// bigScript prints $SIZE bytes.
const bigScript = "#!/bin/sh\nyes spear-soak | head -c \"$SIZE\"\n"

func (l *load) setupLarge(ctx context.Context, work string) error {
	path := filepath.Join(work, "big.sh")
	if err := os.WriteFile(path, []byte(bigScript), 0o755); err != nil {
		return err
	}
	if _, err := l.n.client.RegisterTask(ctx, &pb.RegisterTaskRequest{
		TaskId: "soak-big", ArtifactSpec: &pb.ArtifactSpec{ArtifactType: "process", Location: path},
	}); err != nil {
		return fmt.Errorf("registering the large-output function: %w", err)
	}
	// Outputs are kept for the retention: few enough that the store grows
	// by well under MaxStorageGrowth.
	l.kinds = append(l.kinds, kind{"large output", 1, func(ctx context.Context, l *load) error {
		mode := pb.ExecutionMode_EXECUTION_MODE_SYNC
		if rand.IntN(2) == 0 {
			mode = pb.ExecutionMode_EXECUTION_MODE_ASYNC
		}
		return largeOutput(ctx, l, mode)
	}})
	return nil
}

// largeOutput runs soak-big for 1 to 6 MiB and checks the record's size
// and sha256 and the downloaded output against what the script prints.
func largeOutput(ctx context.Context, l *load, mode pb.ExecutionMode) error {
	size := 1<<20 + rand.IntN(5<<20)
	want := sha256.Sum256(bytes.Repeat([]byte("spear-soak\n"), size/11+1)[:size])
	req := request("soak-big", mode, nil)
	req.Context.Environment = map[string]string{"SIZE": strconv.Itoa(size)}
	resp, err := l.n.client.InvokeFunction(ctx, req)
	if err != nil {
		return err
	}
	id := resp.GetExecutionId()
	res, err := l.n.finalResult(ctx, id)
	if err != nil {
		return err
	}
	if res.GetStatus() != pb.ExecutionStatus_EXECUTION_STATUS_COMPLETED || res.GetOutputSize() != int64(size) ||
		res.GetOutputSha256() != hex.EncodeToString(want[:]) {
		return fmt.Errorf("%s: %v %s, output %d bytes sha256 %s; want %d bytes", id, res.GetStatus(), res.GetErrorCode(),
			res.GetOutputSize(), res.GetOutputSha256(), size)
	}
	return l.n.checkDownload(ctx, id, hex.EncodeToString(want[:]))
}

// finalResult polls an execution's status until it is terminal.
func (n *node) finalResult(ctx context.Context, id string) (*pb.ExecutionResult, error) {
	for {
		st, err := n.client.GetExecutionStatus(ctx, &pb.GetExecutionStatusRequest{ExecutionId: id, IncludeResult: true})
		if err != nil {
			return nil, err
		}
		if st.GetResult().GetStatus().Terminal() {
			return st.GetResult(), nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// checkDownload fetches an execution's whole output over HTTP and checks
// its sha256.
func (n *node) checkDownload(ctx context.Context, id, wantSum string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.addr+"/api/v1/executions/"+id+"/output", nil)
	if err != nil {
		return err
	}
	resp, err := n.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		return fmt.Errorf("%s: download: %w", id, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); resp.StatusCode != 200 || got != wantSum {
		return fmt.Errorf("%s: download: HTTP %d, sha256 %s, want %s", id, resp.StatusCode, got, wantSum)
	}
	return nil
}
