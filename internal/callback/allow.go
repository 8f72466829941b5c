package callback

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spear-go/spear/internal/errdefs"
)

// DefaultAllow returns the patterns of an Allowlist given none: loopback
// hosts only.
func DefaultAllow() []string { return []string{"localhost", "127.0.0.0/8", "::1"} }

// errNotAllowed marks a delivery refused by the allowlist: it is not
// retried.
var errNotAllowed = errors.New("callback host not allowed")

// Allowlist is the set of hosts completion callbacks may be sent to
// (--callback-allow). A pattern is one of
//
//   - any host
//     name              that host name (case-insensitive), e.g. hooks.example.com
//     *.domain          any host name under domain (not domain itself)
//     IP                that address, e.g. 10.0.0.5 or ::1 ([::1] too)
//     IP/bits           any address in that CIDR block, e.g. 10.0.0.0/8
//
// each optionally followed by :port (IPv6 in brackets: [::1]:8080), which
// then must be the URL's port (80 or 443 when it names none). A name is
// trusted as DNS resolves it, except localhost: the connection must reach
// a loopback address. An IP rule is checked against the address actually
// dialled. The zero Allowlist allows DefaultAllow().
type Allowlist struct {
	rules []rule
}

// rule is one parsed pattern.
type rule struct {
	any    bool
	name   string // exact host name, lower case
	suffix string // "*.domain": ".domain"
	prefix netip.Prefix
	isIP   bool
	port   string // "" for any port
}

// ParseAllowlist parses patterns (see Allowlist); none gives DefaultAllow().
func ParseAllowlist(patterns []string) (Allowlist, error) {
	var a Allowlist
	for _, p := range patterns {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		r, err := parseRule(p)
		if err != nil {
			return Allowlist{}, fmt.Errorf("callback allow pattern %q: %w: %w", p, errdefs.ErrInvalidArgument, err)
		}
		a.rules = append(a.rules, r)
	}
	if len(a.rules) == 0 {
		return defaultAllowlist(), nil
	}
	return a, nil
}

func defaultAllowlist() Allowlist {
	a := Allowlist{}
	for _, p := range DefaultAllow() {
		r, _ := parseRule(p)
		a.rules = append(a.rules, r)
	}
	return a
}

func parseRule(p string) (rule, error) {
	if p == "*" {
		return rule{any: true}, nil
	}
	host, port := p, ""
	if inner, ok := strings.CutPrefix(p, "["); ok && strings.HasSuffix(p, "]") {
		host = strings.TrimSuffix(inner, "]")
	} else if ok || strings.Count(p, ":") == 1 {
		h, pt, err := net.SplitHostPort(p)
		if err != nil {
			return rule{}, err
		}
		if n, err := strconv.Atoi(pt); err != nil || n < 1 || n > 65535 {
			return rule{}, fmt.Errorf("port %q: want 1-65535", pt)
		}
		host, port = h, pt
	}
	if pre, err := netip.ParsePrefix(host); err == nil {
		return rule{prefix: pre.Masked(), isIP: true, port: port}, nil
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Zone() == "" {
		ip = ip.Unmap()
		return rule{prefix: netip.PrefixFrom(ip, ip.BitLen()), isIP: true, port: port}, nil
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if d, ok := strings.CutPrefix(host, "*."); ok {
		if !validName(d) {
			return rule{}, errors.New("want *.domain")
		}
		return rule{suffix: "." + d, port: port}, nil
	}
	if !validName(host) {
		return rule{}, errors.New("want *, a host name, *.domain, an IP address or a CIDR block, with an optional :port")
	}
	return rule{name: host, port: port}, nil
}

func validName(s string) bool {
	if s == "" || len(s) > 253 || strings.HasPrefix(s, ".") || strings.Contains(s, "..") {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

func (a Allowlist) effective() []rule {
	if len(a.rules) == 0 {
		return defaultAllowlist().rules
	}
	return a.rules
}

// Check checks a callback URL: an absolute http or https URL (else
// INVALID_CALLBACK_URL) whose host the allowlist allows (else
// CALLBACK_NOT_ALLOWED).
func (a Allowlist) Check(raw string) error {
	if err := ValidateURL(raw); err != nil {
		return err
	}
	u, _ := url.Parse(raw)
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	if _, ok := a.match(u.Hostname(), port); !ok {
		return errdefs.CallbackNotAllowed.New("callback_url %q: host %s is not allowed on this node (--callback-allow; by default only loopback hosts)", raw, u.Host)
	}
	return nil
}

// match returns the first rule allowing host (a name or an IP literal,
// without brackets) and port.
func (a Allowlist) match(host, port string) (rule, bool) {
	ip, ipErr := netip.ParseAddr(host)
	name := strings.TrimSuffix(strings.ToLower(host), ".")
	for _, r := range a.effective() {
		if r.port != "" && r.port != port {
			continue
		}
		switch {
		case r.any:
		case r.isIP:
			if ipErr != nil || ip.Zone() != "" || !r.prefix.Contains(ip.Unmap()) {
				continue
			}
		case ipErr == nil:
			continue // a name rule never matches an IP literal
		case r.suffix != "":
			if !strings.HasSuffix(name, r.suffix) {
				continue
			}
		case r.name != name:
			continue
		}
		return r, true
	}
	return rule{}, false
}

// allowsDial reports whether a connection matched by r may go to the
// address dialled: an IP rule's block, loopback for localhost; a name
// is trusted as resolved.
func (r rule) allowsDial(addr netip.Addr) bool {
	addr = addr.Unmap()
	switch {
	case r.isIP:
		return r.prefix.Contains(addr)
	case r.name == "localhost":
		return addr.IsLoopback()
	}
	return true
}

// dial connects to addr (host:port) only when the allowlist allows it, and
// only to an address the matching rule allows (so a name allowed as
// loopback cannot be rebound elsewhere).
func (a Allowlist) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	r, ok := a.match(host, port)
	if !ok {
		return nil, fmt.Errorf("%w: %s", errNotAllowed, addr)
	}
	d := net.Dialer{Timeout: 10 * time.Second, Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil || !r.allowsDial(ap.Addr()) {
			return fmt.Errorf("%w: %s resolves to %s", errNotAllowed, host, address)
		}
		return nil
	}}
	return d.DialContext(ctx, network, addr)
}

// Client returns an HTTP client that sends callbacks only where a allows:
// it dials through the allowlist, uses no proxy, and follows redirects
// only on the same host (another host's redirect is the answer).
func (a Allowlist) Client(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         a.dial,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: 10 * time.Second,
		},
		CheckRedirect: sameHostRedirects,
	}
}

// sameHostRedirects follows at most 10 redirects, all to the first
// request's host; a redirect elsewhere is returned as the answer.
func sameHostRedirects(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if !strings.EqualFold(req.URL.Host, via[0].URL.Host) {
		return http.ErrUseLastResponse
	}
	return nil
}
