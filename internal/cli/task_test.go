package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/spear-go/spear/api/spearlet"
)

func TestTaskUpdate(t *testing.T) {
	script := filepath.Join(t.TempDir(), "fn.sh")
	content := []byte("#!/bin/sh\necho v2\n")
	if err := os.WriteFile(script, content, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	checksum := "sha256:" + hex.EncodeToString(sum[:])
	relAbs, err := filepath.Abs(filepath.Join("bin", "fn"))
	if err != nil {
		t.Fatal(err)
	}
	// answer echoes the spec back as the task's, changed or not.
	answer := func(changed bool) func(*fakeServer) {
		return func(f *fakeServer) {
			f.upload = func(_ context.Context, r *spearlet.UploadArtifactRequest) (*spearlet.UploadArtifactResponse, error) {
				return &spearlet.UploadArtifactResponse{Location: "artifact:" + r.GetChecksum(), Checksum: r.GetChecksum()}, nil
			}
			f.update = func(_ context.Context, r *spearlet.UpdateTaskRequest) (*spearlet.UpdateTaskResponse, error) {
				return &spearlet.UpdateTaskResponse{Changed: changed,
					Task: &spearlet.TaskInfo{TaskId: r.GetTaskId(), ArtifactSpec: r.GetArtifactSpec()}}, nil
			}
		}
	}
	update := func(spec *spearlet.ArtifactSpec) rpcCall {
		return rpcCall{"UpdateTask", &spearlet.UpdateTaskRequest{TaskId: "t1", ArtifactSpec: spec}}
	}

	runCases(t, []cliCase{
		{
			name:      "no flags re-reads the task's own location",
			args:      []string{"task", "update", "t1"},
			setup:     answer(true),
			stdoutHas: []string{"updated task t1"},
			calls:     []rpcCall{update(&spearlet.ArtifactSpec{})},
		},
		{
			name:      "--location makes a relative path absolute and keeps the type",
			args:      []string{"task", "update", "t1", "--location", filepath.Join("bin", "fn"), "--version", "2"},
			setup:     answer(true),
			stdoutHas: []string{"updated task t1", relAbs},
			calls:     []rpcCall{update(&spearlet.ArtifactSpec{Location: relAbs, Version: "2"})},
		},
		{
			name:      "--upload uploads, then pins the uploaded artifact",
			args:      []string{"task", "update", "t1", "--upload", script},
			setup:     answer(true),
			stdoutHas: []string{"updated task t1", "artifact:" + checksum},
			stderrHas: []string{"uploaded"},
			calls: []rpcCall{
				{"UploadArtifact", &spearlet.UploadArtifactRequest{Name: "fn.sh", Content: content, Checksum: checksum}},
				update(&spearlet.ArtifactSpec{Location: "artifact:" + checksum, Checksum: checksum}),
			},
		},
		{
			name:      "unchanged",
			args:      []string{"task", "update", "t1"},
			setup:     answer(false),
			stdoutHas: []string{"task t1 unchanged"},
		},
		{
			name:  "json",
			args:  []string{"task", "update", "t1", "--json"},
			setup: answer(true),
			check: jsonHas(map[string]any{"changed": true, "task.taskId": "t1"}),
		},
		{
			name: "the node's error and code",
			args: []string{"task", "update", "t1"},
			setup: func(f *fakeServer) {
				f.update = func(ctx context.Context, _ *spearlet.UpdateTaskRequest) (*spearlet.UpdateTaskResponse, error) {
					_ = grpc.SetTrailer(ctx, metadata.Pairs("spear-error-code", "TASK_NOT_FOUND"))
					return nil, status.Error(codes.NotFound, "task \"t1\" not found")
				}
			},
			code:      3,
			stderrHas: []string{"error: task \"t1\" not found (TASK_NOT_FOUND)\n"},
		},
		{
			name:      "a bad type sends nothing",
			args:      []string{"task", "update", "t1", "--type", "jar"},
			code:      2,
			stderrHas: []string{"--type"},
			callsSet:  true,
		},
		{
			name:      "--location and --upload exclude each other",
			args:      []string{"task", "update", "t1", "--location", "/a", "--upload", script},
			code:      2,
			stderrHas: []string{"none of the others"},
			callsSet:  true,
		},
	})
}
