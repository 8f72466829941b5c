package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spear-go/spear/internal/errdefs"
)

// ArtifactScheme prefixes the location of an uploaded artifact:
// "artifact:sha256:<hex>".
const ArtifactScheme = "artifact:"

// PutArtifact stores content in the object store under its SHA-256 digest
// and returns the digest ("sha256:<hex>") and size. If want is set it must
// match the content's digest.
func (s *Artifacts) Put(ctx context.Context, name string, content io.Reader, want string) (string, int64, error) {
	if err := s.usage.admit(); err != nil {
		return "", 0, err
	}
	tmpDir := filepath.Join(s.opts.DataDir, "tmp")
	if err := os.MkdirAll(tmpDir, 0o755); err != nil {
		return "", 0, fmt.Errorf("spool dir: %w", err)
	}
	f, err := os.CreateTemp(tmpDir, "upload-*")
	if err != nil {
		return "", 0, fmt.Errorf("spool upload: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(io.MultiWriter(f, h), content)
	if err != nil {
		return "", 0, fmt.Errorf("read upload: %w: %w", errdefs.ErrInvalidArgument, err)
	}
	if size == 0 {
		return "", 0, errdefs.EmptyArtifact.New("artifact %q is empty", name)
	}
	digest := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if want != "" && !strings.EqualFold(want, digest) {
		return "", 0, errdefs.ChecksumMismatch.New("artifact %q: checksum %s given, content is %s", name, want, digest)
	}
	if _, err := s.artifacts.GetInfo(ctx, digest); err == nil {
		return digest, size, nil // already stored
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", 0, err
	}
	if _, err := s.artifacts.Put(ctx, s.objectMeta(digest, name), f); err != nil {
		return "", 0, s.unavailable("store artifact", err)
	}
	return digest, size, nil
}

// MaterializeArtifact returns the path of a local, executable copy of the
// uploaded artifact digest, fetching it from the object store on first use.
// The copy is read-only: its name is its content's address.
func (s *Artifacts) Materialize(ctx context.Context, digest string) (string, error) {
	hexDigest, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(hexDigest) != 64 {
		return "", errdefs.InvalidArtifactLocation.New("artifact %q: want %ssha256:<64 hex digits>", digest, ArtifactScheme)
	}
	dir := filepath.Join(s.opts.DataDir, "artifacts")
	path := filepath.Join(dir, hexDigest)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("artifact dir: %w", err)
	}
	obj, err := s.artifacts.Get(ctx, digest)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return "", errdefs.ArtifactNotFound.New("artifact %q was not uploaded", digest)
	}
	if err != nil {
		return "", s.unavailable("fetch artifact", err)
	}
	defer obj.Close()
	f, err := os.CreateTemp(dir, hexDigest+".*")
	if err != nil {
		return "", fmt.Errorf("materialise artifact: %w", err)
	}
	defer os.Remove(f.Name())
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), obj); err != nil {
		f.Close()
		return "", s.unavailable("fetch artifact", err)
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != hexDigest {
		return "", fmt.Errorf("artifact %s: stored content hashes to %s: %w", digest, got, errdefs.ErrInternal)
	}
	if err := os.Chmod(f.Name(), 0o555); err != nil {
		return "", err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return "", err
	}
	return path, nil
}
