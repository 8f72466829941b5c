package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// shotsEnv names the directory the console tests save their screenshots
// in; unset, a temporary directory (removed when the test ends).
const shotsEnv = "SPEAR_UI_SHOTS"

// chromiumPath finds headless Chromium. Without it the browser tests
// skip, unless CI is set: on CI (where .ci/run installs Debian's
// chromium) they fail.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("CI=%s and no chromium on PATH: install Debian's chromium (.ci/run does)", os.Getenv("CI"))
	}
	t.Skip("no chromium on PATH: the console's browser tests need headless Chromium (apt-get install chromium)")
	return ""
}

// browser is one headless Chromium tab on a node's console, at 1280×800.
type browser struct {
	t     *testing.T
	ctx   context.Context
	base  string // http://addr
	shots string

	mu     sync.Mutex
	thrown []string // uncaught exceptions of the pages
}

// newBrowser starts headless Chromium for the test; it is stopped when
// the test ends.
func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.WindowSize(1280, 800),
		chromedp.NoSandbox, // the test may run as root, where Chromium's sandbox refuses to start
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	b := &browser{t: t, ctx: bctx, base: base, shots: os.Getenv(shotsEnv)}
	if b.shots == "" {
		b.shots = t.TempDir()
	}
	if err := os.MkdirAll(b.shots, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("console screenshots in %s (set %s to keep them)", b.shots, shotsEnv)
	// The first action starts the browser, for as long as bctx lasts (a
	// context with a timeout here would end it with the timeout).
	if err := chromedp.Do(bctx, desktop()); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	go b.collectExceptions()
	t.Cleanup(func() {
		if e := b.exceptions(); e != "" {
			t.Errorf("the console's pages threw:\n%s", e)
		}
	})
	return b
}

// collectExceptions keeps the pages' uncaught exceptions until the tab
// closes.
func (b *browser) collectExceptions() {
	for ev, err := range chromedp.Events(b.ctx, runtime.ExceptionThrown) {
		if err != nil {
			return
		}
		d := ev.ExceptionDetails
		msg := fmt.Sprintf("%s:%d: %s", d.URL, d.LineNumber+1, d.Text)
		if d.Exception != nil {
			msg += " " + d.Exception.Description
		}
		b.mu.Lock()
		b.thrown = append(b.thrown, msg)
		b.mu.Unlock()
	}
}

func (b *browser) exceptions() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.thrown, "\n")
}

// do runs actions, failing the test on an error; each call is bounded by
// finishBound.
func (b *browser) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, finishBound)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v (page now: %s)", err, b.describe())
	}
}

// open loads a console page and waits for its heading.
func (b *browser) open(path string) {
	b.t.Helper()
	b.do(chromedp.Navigate(b.base+path), chromedp.WaitVisible(chromedp.CSS("main h1")))
}

// eval evaluates a JavaScript expression as a T.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, callTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// waitFor waits until the JavaScript expression is true, failing the test
// (saying what) after finishBound. A navigation meanwhile (a click on a
// link) restarts the wait in the new page.
func (b *browser) waitFor(what, expr string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, finishBound)
	defer cancel()
	for {
		_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond),
			chromedp.WithPollingTimeout(finishBound)))
		if err == nil {
			return
		}
		if ctx.Err() == nil && navigated(err) {
			continue
		}
		b.t.Fatalf("waiting for %s (%s): %v; page now: %s", what, expr, err, b.describe())
	}
}

// navigated says whether err is a script's page going away under it.
func navigated(err error) bool {
	for _, s := range []string{"Cannot find context", "Execution context was destroyed", "Inspected target navigated"} {
		if strings.Contains(err.Error(), s) {
			return true
		}
	}
	return false
}

// text is the text of the first element sel selects ("" if none).
func (b *browser) text(sel string) string {
	b.t.Helper()
	return eval[string](b, fmt.Sprintf(`(document.querySelector(%s)||{}).textContent||""`, strconv.Quote(sel)))
}

// describe is the page's URL and the start of its main text, for
// failure messages.
func (b *browser) describe() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + " | " + (document.querySelector("main")||document.body).innerText.slice(0, 1500)`))
	if err != nil {
		s = "(unreadable: " + err.Error() + ")"
	}
	if e := b.exceptions(); e != "" {
		s += "\nuncaught exceptions:\n" + e
	}
	return s
}

// shot saves a screenshot of the whole page as NAME.png.
func (b *browser) shot(name string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, callTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(b.shots, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	return path
}

// colorScheme makes the page see prefers-color-scheme: scheme.
func (b *browser) colorScheme(scheme string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, callTimeout)
	defer cancel()
	_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
	})
	if err != nil {
		b.t.Fatalf("emulating %s: %v", scheme, err)
	}
}

// setValue sets the value of the element sel selects (no event).
func setValue(sel, v string) chromedp.Action[chromedp.Void] {
	return chromedp.SetValue(chromedp.CSS(sel), v)
}

// clearField empties the field sel selects (SetValue cannot set "").
func clearField(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector(%s).value = ""`, strconv.Quote(sel)))
}

// clickOn clicks the element sel selects, as a mouse does.
func clickOn(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.Click(chromedp.CSS(sel))
}

// dispatch fires event (bubbling) on the element sel selects.
func dispatch(sel, event string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector(%s).dispatchEvent(new Event(%s, {bubbles: true}))`,
		strconv.Quote(sel), strconv.Quote(event)))
}

// emulatePhone makes the tab a 390×844 phone screen; desktop the usual
// 1280×800.
func emulatePhone() chromedp.Action[chromedp.Void] {
	return chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile)
}

func desktop() chromedp.Action[chromedp.Void] { return chromedp.EmulateViewport(1280, 800) }
