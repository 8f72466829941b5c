package store

// Sizes are the byte bounds derived from the NATS server's max payload, so
// that no message Spear writes is ever refused for its size: a stock
// nats-server allows 1 MiB, the embedded one 8 MiB.
type Sizes struct {
	// Payload is the server's max payload.
	Payload int
	// Inline is how much output a record keeps, and how much input a queue
	// message carries; beyond it output goes to the chunk stream and input
	// to the input object store.
	Inline int
	// Block is the largest output chunk stored in one message.
	Block int
}

// maxInline bounds Inline whatever the payload: records stay small to read
// and list.
const maxInline = 256 << 10

func sizesFor(payload int64) Sizes {
	p := int(max(payload, 64<<10))
	return Sizes{Payload: p, Inline: min(maxInline, p/4), Block: min(maxInline, p/2)}
}

// Sizes returns the store's byte bounds.
func (s *Store) Sizes() Sizes { return s.sizes }
