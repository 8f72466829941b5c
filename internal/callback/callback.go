// Package callback delivers completion callbacks: an HTTP POST of an
// execution's final JSON record to the URL the caller gave, retried with
// exponential backoff and jitter until it is accepted, refused for good, or
// the attempts run out.
//
// A callback goes only to a host the node's Allowlist allows
// (--callback-allow; by default loopback only): the URL is checked when
// the invocation is accepted and again at delivery, the connection only
// reaches an address the matching rule allows, and a redirect to another
// host is not followed.
package callback

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/retry"
)

// States of a delivery.
const (
	StatePending   = "pending"
	StateDelivered = "delivered"
	StateFailed    = "failed"
)

// Outcome is how a delivery went.
type Outcome struct {
	State          string    `json:"state"`
	Attempts       int32     `json:"attempts"`
	LastStatusCode int32     `json:"last_status,omitempty"`
	LastError      string    `json:"last_error,omitempty"`
	DeliveredAt    time.Time `json:"delivered_at,omitzero"`
}

// Options configures a Deliverer.
type Options struct {
	// Allow are the hosts callbacks may go to; the zero Allowlist allows
	// loopback hosts only.
	Allow Allowlist
	// Client sends the requests; nil uses Allow.Client with a 10 s
	// timeout.
	Client *http.Client
	// MaxAttempts bounds the tries (default 6).
	MaxAttempts int
	// BaseDelay is the delay before the second try, doubled for each
	// further one up to MaxDelay (defaults 200 ms and 30 s).
	BaseDelay time.Duration
	MaxDelay  time.Duration
}

// Deliverer posts callbacks.
type Deliverer struct {
	opts Options
}

// New returns a Deliverer.
func New(opts Options) *Deliverer {
	if opts.Client == nil {
		opts.Client = opts.Allow.Client(10 * time.Second)
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 6
	}
	if opts.BaseDelay <= 0 {
		opts.BaseDelay = 200 * time.Millisecond
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = 30 * time.Second
	}
	return &Deliverer{opts: opts}
}

// ValidateURL checks a callback URL: absolute http or https with a host.
func ValidateURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(raw) > 2048 {
		return errdefs.InvalidCallbackURL.New("callback_url %q: want an absolute http:// or https:// URL of at most 2048 bytes", raw)
	}
	return nil
}

// Deliver posts body to target until a 2xx answer, a 4xx answer other than
// 408 and 429 (refused for good), the attempts run out, or ctx ends. The
// request carries the execution id in the Spear-Execution-Id header.
func (d *Deliverer) Deliver(ctx context.Context, target, executionID string, body []byte) Outcome {
	var out Outcome
	if err := d.opts.Allow.Check(target); err != nil {
		// Accepted under another allowlist (before a restart).
		return Outcome{State: StateFailed, LastError: err.Error()}
	}
	schedule := retry.Backoff{Base: d.opts.BaseDelay, Max: d.opts.MaxDelay}
	for {
		out.Attempts++
		code, err := d.post(ctx, target, executionID, body)
		out.LastStatusCode = int32(code)
		out.LastError = ""
		if err != nil {
			out.LastError = err.Error()
		}
		switch {
		case errors.Is(err, errNotAllowed):
			out.State = StateFailed
			return out
		case err == nil && code >= 300 && code < 400:
			out.State = StateFailed
			out.LastError = fmt.Sprintf("HTTP %d: a redirect to another host is not followed", code)
			return out
		case err == nil && code >= 200 && code < 300:
			out.State = StateDelivered
			out.DeliveredAt = time.Now()
			return out
		case err == nil && code >= 400 && code < 500 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests:
			out.State = StateFailed
			out.LastError = fmt.Sprintf("refused with HTTP %d", code)
			return out
		case err == nil:
			out.LastError = fmt.Sprintf("HTTP %d", code)
		}
		if int(out.Attempts) >= d.opts.MaxAttempts {
			out.State = StateFailed
			return out
		}
		if !retry.Sleep(ctx, schedule.Delay(int(out.Attempts))) {
			out.State = StateFailed
			out.LastError = "gave up: " + context.Cause(ctx).Error()
			return out
		}
	}
}

func (d *Deliverer) post(ctx context.Context, target, executionID string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "spear-callback/1")
	req.Header.Set("Spear-Execution-Id", executionID)
	resp, err := d.opts.Client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}
