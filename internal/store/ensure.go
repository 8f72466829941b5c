package store

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spear-go/spear/internal/retry"
)

// callTimeout bounds one request of provisioning (see ensure).
const callTimeout = 2 * time.Second

// ensure updates an asset (a stream, bucket or consumer), or creates it
// when it does not exist.
//
// Nodes that start together on a new cluster create and update the same
// assets at the same moment, and a JetStream cluster (nats-server 2.15)
// may then answer none of the identical requests, though it carries them
// out. So each request is given a short time, and one that gets no answer
// is made again after a random pause that sets the nodes apart.
func ensure[T any](ctx context.Context, update, create func(context.Context) (T, error)) (T, error) {
	bounded := func(op func(context.Context) (T, error)) (T, error) {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		return op(cctx)
	}
	for attempt := 1; ; attempt++ {
		v, err := bounded(update)
		if missing(err) {
			v, err = bounded(create)
		}
		if err == nil || !transient(err) || attempt >= 8 || ctx.Err() != nil {
			return v, err
		}
		if !retry.Sleep(ctx, rand.N(500*time.Millisecond)) {
			return v, err
		}
	}
}

// missing says whether an update failed because the asset does not exist.
func missing(err error) bool {
	return errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) ||
		errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDoesNotExist)
}

// ensureKV creates or updates a KV bucket.
func (s *provisioner) ensureKV(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return ensure(ctx,
		func(ctx context.Context) (jetstream.KeyValue, error) { return s.js.UpdateKeyValue(ctx, cfg) },
		func(ctx context.Context) (jetstream.KeyValue, error) { return s.js.CreateKeyValue(ctx, cfg) })
}

// ensureObjectStore creates or updates an object store.
func (s *provisioner) ensureObjectStore(ctx context.Context, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	return ensure(ctx,
		func(ctx context.Context) (jetstream.ObjectStore, error) { return s.js.UpdateObjectStore(ctx, cfg) },
		func(ctx context.Context) (jetstream.ObjectStore, error) { return s.js.CreateObjectStore(ctx, cfg) })
}

// ensureStream creates or updates a stream.
func (s *provisioner) ensureStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return ensure(ctx,
		func(ctx context.Context) (jetstream.Stream, error) { return s.js.UpdateStream(ctx, cfg) },
		func(ctx context.Context) (jetstream.Stream, error) { return s.js.CreateStream(ctx, cfg) })
}

// ensureConsumer creates or updates a consumer of st.
func ensureConsumer(ctx context.Context, st jetstream.Stream, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	return ensure(ctx,
		func(ctx context.Context) (jetstream.Consumer, error) { return st.UpdateConsumer(ctx, cfg) },
		func(ctx context.Context) (jetstream.Consumer, error) { return st.CreateConsumer(ctx, cfg) })
}
