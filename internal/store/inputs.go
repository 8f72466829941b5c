package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spear-go/spear/internal/errdefs"
)

// Inputs of async executions larger than Sizes.Inline do not travel in the
// queue message: they are kept in the object store spear_inputs (one object
// per execution, for the record retention) and the message refers to them.
const (
	BucketInputs = "spear_inputs"
	// InputScheme prefixes a reference to a stored input: "input:<id>".
	InputScheme = "input:"
)

func (s *provisioner) provisionInputs(ctx context.Context) error {
	inputs, err := s.ensureObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:   BucketInputs,
		Storage:  jetstream.FileStorage,
		Replicas: s.opts.Replicas,
		TTL:      s.opts.Retention,
	})
	if err != nil {
		return fmt.Errorf("input store: %w", err)
	}
	s.inputs = boundObjects{inputs, s.core}
	return nil
}

// PutInput stores an execution's input and returns the reference a queue
// message carries instead of it.
func (s *Inputs) Put(ctx context.Context, id string, data []byte) (string, error) {
	if _, err := s.inputs.Put(ctx, s.objectMeta(id, ""), bytes.NewReader(data)); err != nil {
		return "", s.unavailable("store input", err)
	}
	return InputScheme + id, nil
}

// objectMeta names an object whose chunks fit the server's max payload.
func (s *core) objectMeta(name, description string) jetstream.ObjectMeta {
	return jetstream.ObjectMeta{Name: name, Description: description, Opts: &jetstream.ObjectMetaOptions{ChunkSize: uint32(s.sizes.Block)}}
}

// OpenInput opens a stored input: "input:<id>" (stored by PutInput) or an
// uploaded artifact, "artifact:sha256:<hex>". The caller closes it.
func (s *Inputs) Open(ctx context.Context, ref string) (io.ReadCloser, error) {
	bucket, name, err := s.bucket(ref)
	if err != nil {
		return nil, err
	}
	obj, err := bucket.Get(ctx, name)
	if err != nil {
		return nil, inputError(ref, err)
	}
	return obj, nil
}

// InputExists checks that a stored input exists, to refuse an invocation
// that names a missing one before accepting it.
func (s *Inputs) Exists(ctx context.Context, ref string) error {
	bucket, name, err := s.bucket(ref)
	if err != nil {
		return err
	}
	if _, err := bucket.GetInfo(ctx, name); err != nil {
		return inputError(ref, err)
	}
	return nil
}

func (s *Inputs) bucket(ref string) (jetstream.ObjectStore, string, error) {
	if digest, ok := strings.CutPrefix(ref, ArtifactScheme); ok {
		return s.artifacts, digest, nil
	}
	if id, ok := strings.CutPrefix(ref, InputScheme); ok {
		return s.inputs, id, nil
	}
	return nil, "", errdefs.InvalidInputRef.New("input_ref %q: want %ssha256:<hex> (an uploaded artifact)", ref, ArtifactScheme)
}

func inputError(ref string, err error) error {
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return errdefs.InputNotFound.New("input %q is not stored (expired, or never uploaded)", ref)
	}
	return unavailable("read input", err)
}

// DeleteInput drops an execution's stored input, if any.
func (s *Inputs) Delete(ctx context.Context, id string) error {
	if err := s.inputs.Delete(ctx, id); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return s.unavailable("delete input", err)
	}
	return nil
}
