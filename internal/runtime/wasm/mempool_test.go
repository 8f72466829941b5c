package wasm

import (
	"bytes"
	"testing"
)

func TestMemPoolClasses(t *testing.T) {
	for _, tc := range []struct {
		n    uint64
		want int
	}{
		{0, 0}, {1, 0}, {minPooled, 0}, {minPooled + 1, 1}, {2 * minPooled, 1},
		{3 * minPooled, 2}, {minPooled << 8, 8}, {minPooled<<8 + 1, -1},
	} {
		if got := class(tc.n); got != tc.want {
			t.Errorf("class(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
}

// TestMemPoolZeroes: memory handed out again never shows what an earlier
// instance wrote, whether reused as is or grown.
func TestMemPoolZeroes(t *testing.T) {
	var p memPool
	for round := range 50 {
		m := p.Allocate(2*minPooled, 16*minPooled)
		buf := m.Reallocate(2 * minPooled)
		if len(buf) != 2*minPooled || !allZero(buf) {
			t.Fatalf("round %d: fresh memory of %d bytes is not zero", round, len(buf))
		}
		for i := range buf {
			buf[i] = 0xAB
		}
		grown := m.Reallocate(5 * minPooled)
		if !bytes.Equal(grown[:2*minPooled], bytes.Repeat([]byte{0xAB}, 2*minPooled)) || !allZero(grown[2*minPooled:]) {
			t.Fatalf("round %d: growing lost data or exposed garbage", round)
		}
		for i := range grown {
			grown[i] = 0xCD
		}
		m.Free()
		m.Free() // twice is harmless
	}
	if m := p.Allocate(minPooled, minPooled); m.Reallocate(2*minPooled) != nil {
		t.Fatal("grew past its maximum")
	}
}

// TestMemPoolGrowsGeometrically: a memory grown a page at a time is
// replaced a logarithmic number of times, beyond the pooled sizes too.
func TestMemPoolGrowsGeometrically(t *testing.T) {
	var p memPool
	m := p.Allocate(minPooled, 1<<30)
	replaced := 0
	last := m.Reallocate(minPooled)
	for size := uint64(2 * minPooled); size <= 64<<20; size += minPooled {
		buf := m.Reallocate(size)
		if uint64(len(buf)) != size {
			t.Fatalf("Reallocate(%d) returned %d bytes", size, len(buf))
		}
		if &buf[0] != &last[0] {
			replaced++
		}
		last = buf
	}
	if replaced > 12 {
		t.Errorf("growing to 64 MiB a page at a time replaced the buffer %d times, want at most 12", replaced)
	}
	m.Free()
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
