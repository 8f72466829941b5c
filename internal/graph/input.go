package graph

import (
	"encoding/base64"
	"encoding/json"
	"unicode/utf8"

	"github.com/spear-go/spear/internal/execution"
)

// Keys of a keyed input that are not step ids (a step id cannot hold '$').
const (
	// Base64Key marks an output that is not valid UTF-8:
	// {"$base64": "<standard base64>"} stands for it.
	Base64Key = "$base64"
	// ErrorsKey holds, by step id, the error of each parent that failed
	// with on_failure CONTINUE (its value is null).
	ErrorsKey = "$errors"
)

// Verbatim reports whether a step's input is its parent's output as it
// is: one parent, which completed. Otherwise the input is Keyed.
func Verbatim(ups []execution.Upstream) bool { return len(ups) == 1 && !ups[0].Failed }

// StepError is a failed parent's entry under ErrorsKey.
type StepError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Keyed is the input of a step with several parents (or a failed one):
// one JSON object keyed by parent step id, each value the parent's output
// as a string when it is valid UTF-8, else {"$base64": ...}; a parent that
// failed (on_failure CONTINUE) has null, and its error under "$errors".
// outputs are the parents' outputs, in the order of ups.
func Keyed(ups []execution.Upstream, outputs [][]byte) ([]byte, error) {
	obj := make(map[string]any, len(ups)+1)
	errs := map[string]StepError{}
	for i, u := range ups {
		switch {
		case u.Failed:
			obj[u.Step] = nil
			errs[u.Step] = StepError{Code: u.ErrorCode, Message: u.ErrorMessage}
		case utf8.Valid(outputs[i]):
			obj[u.Step] = string(outputs[i])
		default:
			obj[u.Step] = map[string]string{Base64Key: base64.StdEncoding.EncodeToString(outputs[i])}
		}
	}
	if len(errs) > 0 {
		obj[ErrorsKey] = errs
	}
	return json.Marshal(obj)
}
