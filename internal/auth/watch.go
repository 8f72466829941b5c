package auth

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// WatchOptions configures Watch.
type WatchOptions struct {
	// Interval is how often the file is also checked by its size, mtime
	// and inode, for file systems that send no change events (a file
	// shared over NFS by the nodes of a cluster). Default 2s.
	Interval time.Duration
	// Now tells whether a token expired; default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Watch reads the token file at path and keeps the returned Keys up to
// date with it until ctx ends: on a change event (fsnotify on its
// directory, so an editor's or `spear token`'s rename over it counts) and,
// failing events, by polling. A file that cannot be read at the start is
// an error; later, a file that is gone or unreadable leaves no token
// valid (it fails closed), and lines that are not valid entries are left
// out, with a warning naming them by number (a line is never logged).
func Watch(ctx context.Context, path string, opts WatchOptions) (*Keys, error) {
	return watchWith(ctx, path, opts, false)
}

// watchWith is Watch; noEvents has it poll only (as where fsnotify fails).
func watchWith(ctx context.Context, path string, opts WatchOptions, noEvents bool) (*Keys, error) {
	if opts.Interval <= 0 {
		opts.Interval = 2 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	entries, err := ReadFile(abs)
	if err != nil {
		return nil, err
	}
	w := &watcher{path: abs, opts: opts, keys: NewKeys(entries, opts.Now), stamp: stampOf(abs)}
	if len(entries) == 0 {
		opts.Logger.Warn("the token file holds no token: every call that needs one is refused", "file", abs)
	}
	events, err := fsnotify.NewWatcher()
	if err == nil && noEvents {
		_ = events.Close()
		err = errors.New("change events off")
	}
	if err == nil {
		if err = events.Add(filepath.Dir(abs)); err != nil {
			_ = events.Close()
		}
	}
	if err != nil {
		opts.Logger.Warn("no change events for the token file: polling it", "file", abs, "interval", opts.Interval, "err", err)
		events = nil
	}
	go w.run(ctx, events)
	return w.keys, nil
}

type watcher struct {
	path  string
	opts  WatchOptions
	keys  *Keys
	stamp stamp
}

func (w *watcher) run(ctx context.Context, events *fsnotify.Watcher) {
	var (
		evc  chan fsnotify.Event
		errc chan error
	)
	if events != nil {
		defer events.Close()
		evc, errc = events.Events, events.Errors
	}
	tick := time.NewTicker(w.opts.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-evc:
			if filepath.Clean(ev.Name) == w.path {
				w.reload()
			}
		case err := <-errc:
			w.opts.Logger.Warn("token file change events", "err", err)
		case <-tick.C:
			if stampOf(w.path) != w.stamp {
				w.reload()
			}
		}
	}
}

func (w *watcher) reload() {
	w.stamp = stampOf(w.path)
	entries, err := ReadFile(w.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		w.opts.Logger.Warn("the token file is gone: every token is refused until it is back", "file", w.path)
	case err != nil:
		w.opts.Logger.Warn("reading the token file", "file", w.path, "err", err)
	}
	w.keys.Set(entries)
	w.opts.Logger.Info("token file reloaded", "file", w.path, "tokens", w.keys.Len())
}

// stamp tells whether a file changed without reading it.
type stamp struct {
	size, ino int64
	mtime     time.Time
}

func stampOf(path string) stamp {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}
	}
	s := stamp{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino = int64(st.Ino)
	}
	return s
}
