package wasm

import (
	"math/bits"
	"sync"

	"github.com/tetratelabs/wazero/experimental"
)

// memPool recycles the linear memories of finished instances. A fresh
// instance per invocation would otherwise allocate (and the GC reclaim) its
// whole memory every time — 128 KiB for the smallest C module — which
// dominated the cost of a short function. Buffers are zeroed when returned,
// so an instance never sees another invocation's data.
type memPool struct {
	classes [poolClasses]sync.Pool // class c holds buffers of capacity minPooled<<c
}

const (
	minPooled   = 64 << 10 // one wasm page
	poolClasses = 9        // up to 16 MiB; larger memories are not pooled
)

// class returns the pool class whose buffers hold n bytes, or -1.
func class(n uint64) int {
	if n <= minPooled {
		return 0
	}
	c := bits.Len64((n - 1) / minPooled)
	if c >= poolClasses {
		return -1
	}
	return c
}

// get returns a zeroed buffer of length 0 and capacity at least n.
func (p *memPool) get(n uint64) []byte {
	c := class(n)
	if c < 0 {
		return make([]byte, 0, n)
	}
	if b, ok := p.classes[c].Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, minPooled<<c)
}

// put zeroes the used part of b and keeps it for reuse.
func (p *memPool) put(b []byte) {
	c := class(uint64(cap(b)))
	if c < 0 || uint64(cap(b)) != minPooled<<c {
		return
	}
	clear(b[:len(b)])
	b = b[:0]
	p.classes[c].Put(&b)
}

// Allocate implements experimental.MemoryAllocator.
func (p *memPool) Allocate(capacity, max uint64) experimental.LinearMemory {
	return &pooledMemory{pool: p, max: max, buf: p.get(capacity)}
}

type pooledMemory struct {
	pool *memPool
	max  uint64
	buf  []byte
}

// Reallocate grows the memory to size bytes; new bytes are zero. A buffer
// that must be replaced is replaced by one at least twice as large (up to
// the maximum), so that a guest growing its memory a page at a time costs
// a linear amount of copying, not a quadratic one.
func (m *pooledMemory) Reallocate(size uint64) []byte {
	if size > m.max {
		return nil
	}
	if size <= uint64(cap(m.buf)) {
		m.buf = m.buf[:size] // the capacity beyond len is already zero
		return m.buf
	}
	grown := m.pool.get(max(size, min(2*uint64(cap(m.buf)), m.max)))[:size]
	copy(grown, m.buf)
	m.pool.put(m.buf)
	m.buf = grown
	return m.buf
}

// Free returns the memory to the pool.
func (m *pooledMemory) Free() {
	if m.buf != nil {
		m.pool.put(m.buf)
		m.buf = nil
	}
}
