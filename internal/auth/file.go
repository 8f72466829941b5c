package auth

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
)

// Entry is one token in the token file, one JSON object per line:
//
//	{"name":"ci","scope":"invoke","sha256":"<hex>","created":"2026-01-02T15:04:05Z","expires":"2026-02-01T15:04:05Z"}
//
// The token itself is never stored, only its sha256. expires is optional.
// Blank lines and lines starting with # are ignored.
type Entry struct {
	Name    string    `json:"name"`
	Scope   string    `json:"scope"`
	SHA256  string    `json:"sha256"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"`
}

// ValidName checks a token's name: 1-64 of A-Z a-z 0-9 . _ @ -, starting
// with a letter or digit.
func ValidName(name string) error {
	ok := len(name) >= 1 && len(name) <= 64 && isAlnum(name[0])
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = isAlnum(c) || c == '.' || c == '_' || c == '@' || c == '-'
	}
	if !ok {
		return fmt.Errorf("token name %q: want 1-64 of A-Z a-z 0-9 . _ @ -, starting with a letter or digit: %w", name, errdefs.ErrInvalidArgument)
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
}

// Expired says whether the entry's expiry has passed at now.
func (e Entry) Expired(now time.Time) bool {
	return !e.Expires.IsZero() && !now.Before(e.Expires)
}

func (e Entry) check() error {
	if err := ValidName(e.Name); err != nil {
		return err
	}
	if _, err := ParseScope(e.Scope); err != nil {
		return err
	}
	if b, err := hex.DecodeString(e.SHA256); err != nil || len(b) != 32 {
		return fmt.Errorf("token %q: sha256 is not 64 hex digits: %w", e.Name, errdefs.ErrInvalidArgument)
	}
	return nil
}

// ParseFile reads a token file's entries. It returns every entry that is
// valid, and an error naming the lines that are not (by number only: a
// line might hold a pasted token by mistake).
func ParseFile(r io.Reader) ([]Entry, error) {
	var (
		out []Entry
		bad []string
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		var e Entry
		dec := json.NewDecoder(strings.NewReader(text))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil || e.check() != nil {
			bad = append(bad, fmt.Sprint(line))
			continue
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("token file: %w", err)
	}
	if len(bad) > 0 {
		return out, fmt.Errorf("token file: line %s not a valid entry (one JSON object per line: name, scope, sha256, created, expires): %w",
			strings.Join(bad, ", "), errdefs.ErrInvalidArgument)
	}
	return out, nil
}

// ReadFile reads the token file at path (see ParseFile).
func ReadFile(path string) ([]Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	defer f.Close()
	return ParseFile(f)
}

// Update changes the token file at path under an exclusive lock: fn gets
// the entries (none when the file does not exist yet) and returns the new
// ones, which replace the file atomically (a new file renamed over it,
// mode 0600), so a node reading it never sees half a change.
func Update(path string, fn func([]Entry) ([]Entry, error)) error {
	f, err := lockFile(path)
	if err != nil {
		return err
	}
	defer f.Close()
	entries, err := ParseFile(f)
	if err != nil {
		return err
	}
	entries, err = fn(entries)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	for _, e := range entries {
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	return replaceFile(path, buf.Bytes())
}

// lockFile opens path (creating it) and holds an exclusive flock on it.
// Since Update renames a new file over path, a waiter that got the lock
// on a file that was replaced meanwhile opens the new one and tries again.
func lockFile(path string) (*os.File, error) {
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("token file: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			f.Close()
			return nil, fmt.Errorf("token file: lock: %w", err)
		}
		held, err1 := f.Stat()
		now, err2 := os.Stat(path)
		if err := errors.Join(err1, err2); err != nil && !os.IsNotExist(err2) {
			f.Close()
			return nil, fmt.Errorf("token file: %w", err)
		}
		if err2 == nil && os.SameFile(held, now) {
			return f, nil
		}
		f.Close()
	}
}

func replaceFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("token file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("token file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	return nil
}
