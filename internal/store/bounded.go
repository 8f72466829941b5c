package store

import (
	"context"
	"io"

	"github.com/nats-io/nats.go/jetstream"
)

// boundKV is a KV bucket whose requests are bounded and noted (see
// quorum.go). A listing is refused while the quorum is lost but not
// bounded (it reads for as long as the bucket has keys); watches are
// neither.
type boundKV struct {
	jetstream.KeyValue
	c *core
}

func (kv boundKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	return request(kv.c, ctx, false, func(ctx context.Context) (jetstream.KeyValueEntry, error) {
		return kv.KeyValue.Get(ctx, key)
	})
}

func (kv boundKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	return request(kv.c, ctx, true, func(ctx context.Context) (uint64, error) {
		return kv.KeyValue.Put(ctx, key, value)
	})
}

func (kv boundKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	return request(kv.c, ctx, true, func(ctx context.Context) (uint64, error) {
		return kv.KeyValue.Create(ctx, key, value, opts...)
	})
}

func (kv boundKV) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	return request(kv.c, ctx, true, func(ctx context.Context) (uint64, error) {
		return kv.KeyValue.Update(ctx, key, value, revision)
	})
}

func (kv boundKV) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	_, err := request(kv.c, ctx, true, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, kv.KeyValue.Delete(ctx, key, opts...)
	})
	return err
}

func (kv boundKV) Purge(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	_, err := request(kv.c, ctx, true, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, kv.KeyValue.Purge(ctx, key, opts...)
	})
	return err
}

func (kv boundKV) ListKeys(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyLister, error) {
	if err := kv.c.quorum.check(); err != nil {
		return nil, err
	}
	return kv.KeyValue.ListKeys(ctx, opts...)
}

func (kv boundKV) ListKeysFiltered(ctx context.Context, filters ...string) (jetstream.KeyLister, error) {
	if err := kv.c.quorum.check(); err != nil {
		return nil, err
	}
	return kv.KeyValue.ListKeysFiltered(ctx, filters...)
}

// boundObjects is an object store whose requests are bounded and noted
// (see quorum.go). Puts and gets stream an object's chunks for as long as
// it takes: they are refused while the quorum is lost, not bounded.
type boundObjects struct {
	jetstream.ObjectStore
	c *core
}

func (o boundObjects) GetInfo(ctx context.Context, name string, opts ...jetstream.GetObjectInfoOpt) (*jetstream.ObjectInfo, error) {
	return request(o.c, ctx, false, func(ctx context.Context) (*jetstream.ObjectInfo, error) {
		return o.ObjectStore.GetInfo(ctx, name, opts...)
	})
}

func (o boundObjects) Delete(ctx context.Context, name string) error {
	_, err := request(o.c, ctx, true, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, o.ObjectStore.Delete(ctx, name)
	})
	return err
}

func (o boundObjects) Get(ctx context.Context, name string, opts ...jetstream.GetObjectOpt) (jetstream.ObjectResult, error) {
	if err := o.c.quorum.check(); err != nil {
		return nil, err
	}
	return o.ObjectStore.Get(ctx, name, opts...)
}

func (o boundObjects) Put(ctx context.Context, meta jetstream.ObjectMeta, r io.Reader) (*jetstream.ObjectInfo, error) {
	if err := o.c.quorum.check(); err != nil {
		return nil, err
	}
	info, err := o.ObjectStore.Put(ctx, meta, r)
	switch {
	case err == nil:
		o.c.quorum.ok()
	case noQuorum(err) && ctx.Err() == nil: // not the caller's deadline
		o.c.quorum.failed(err)
	}
	return info, err
}
