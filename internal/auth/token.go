package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"

	"github.com/spear-go/spear/internal/errdefs"
)

// TokenPrefix starts every token, so that one is easy to recognise (in a
// leaked file, a secret scanner, a URL that must not carry it).
const TokenPrefix = "spear_"

// tokenBytes is the entropy of a token: 32 random bytes, 43 characters of
// unpadded base64url after the prefix.
const tokenBytes = 32

// tokenLen is the length of a token, prefix included: unpadded base64
// has a character per 6 bits.
const tokenLen = len(TokenPrefix) + (tokenBytes*8+5)/6

// NewToken returns a fresh random token: "spear_" and 32 bytes from
// crypto/rand in unpadded base64url.
func NewToken() (string, error) {
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// Hash is the hex sha256 of a token: what the token file keeps.
func Hash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// WellFormed says whether s has the form of a token: the prefix, then 43
// characters of the base64url alphabet.
func WellFormed(s string) bool {
	if len(s) != tokenLen || !strings.HasPrefix(s, TokenPrefix) {
		return false
	}
	for _, c := range []byte(s[len(TokenPrefix):]) {
		if !isBase64URL(c) {
			return false
		}
	}
	return true
}

// ContainsToken says whether s holds a well-formed token anywhere in it.
func ContainsToken(s string) bool {
	for {
		i := strings.Index(s, TokenPrefix)
		if i < 0 {
			return false
		}
		rest := s[i+len(TokenPrefix):]
		n := 0
		for n < len(rest) && isBase64URL(rest[n]) {
			n++
		}
		if n >= tokenLen-len(TokenPrefix) {
			return true
		}
		s = rest
	}
}

func isBase64URL(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// ParseAuthorization reads the token from a request's Authorization
// header values (all of them; gRPC metadata "authorization"). The one
// accepted form is "Bearer <token>": the scheme in any case, one or more
// spaces, a well-formed token, optional spaces or tabs around the whole.
// No header (or an empty one) is AUTH_REQUIRED; anything else that is not
// that form — several headers, another scheme, a token of the wrong length
// or alphabet — is AUTH_INVALID. Errors never repeat what was sent.
func ParseAuthorization(values []string) (string, error) {
	switch {
	case len(values) == 0 || len(values) == 1 && trimOWS(values[0]) == "":
		return "", errdefs.AuthRequired.New("this node requires a bearer token: send 'authorization: Bearer <token>' (spear: --token or SPEAR_TOKEN)")
	case len(values) > 1:
		return "", errdefs.AuthInvalid.New("more than one authorization header")
	}
	v := trimOWS(values[0])
	scheme, rest, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", errdefs.AuthInvalid.New("malformed authorization header: want 'Bearer <token>'")
	}
	token := strings.TrimLeft(rest, " ")
	if !WellFormed(token) {
		return "", errdefs.AuthInvalid.New("malformed bearer token: want %s followed by 43 base64url characters", TokenPrefix)
	}
	return token, nil
}

func trimOWS(s string) string { return strings.Trim(s, " \t") }
