package server

import (
	"math/rand/v2"
	"strings"
	"testing"

	pb "github.com/spear-go/spear/api/spearlet"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// TestReadInvocation: over random JSON invocations, valid and not (escapes,
// short enum names, quoted numbers, leading zeros, base64 of every form,
// unknown and snake_case fields, nulls, keys given twice, trailing bytes),
// whatever readInvocation reads, protojson reads too, as the same message.
func TestReadInvocation(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	read := 0
	const n = 6000
	for range n {
		b := []byte(randInvocation(rnd))
		var fast, slow pb.InvokeFunctionRequest
		if !readInvocation(b, &fast) {
			continue
		}
		read++
		if err := protojson.Unmarshal(b, &slow); err != nil {
			t.Fatalf("readInvocation read what protojson refuses (%v):\n%s", err, b)
		}
		if !proto.Equal(&fast, &slow) {
			t.Fatalf("%s\nreadInvocation %v\nprotojson      %v", b, &fast, &slow)
		}
	}
	if read < n/10 || read > n-n/10 {
		t.Errorf("readInvocation read %d of %d", read, n)
	}
}

// TestReadInvocationTypical: what a curl user sends is read here.
func TestReadInvocationTypical(t *testing.T) {
	for _, b := range []string{
		`{"taskId":"wasm-echo","executionMode":"EXECUTION_MODE_SYNC","parameters":[{"name":"input","value":{"@type":"type.googleapis.com/google.protobuf.StringValue","value":"hello"}}]}`,
		"{\n  \"taskId\": \"t\", \"executionMode\": \"EXECUTION_MODE_ASYNC\", \"priority\": -3, \"wait\": true,\n  \"parameters\": [{\"name\": \"input\", \"value\": {\"value\": \"aGk=\", \"@type\": \"type.googleapis.com/google.protobuf.BytesValue\"}}]\n}\n",
	} {
		var m pb.InvokeFunctionRequest
		if !readInvocation([]byte(b), &m) {
			t.Errorf("not read here: %s", b)
		}
	}
	// Through the codec, a short enum name still reads (protojson's path).
	var m pb.InvokeFunctionRequest
	if err := (enumJSON{"json"}).Unmarshal([]byte(`{"taskId":"t","executionMode":"sync"}`), &m); err != nil || m.ExecutionMode != pb.ExecutionMode_EXECUTION_MODE_SYNC {
		t.Errorf("short enum name: %v, %v", m.ExecutionMode, err)
	}
}

// randInvocation builds a JSON invocation from random fields and values;
// a value protojson reads otherwise, or refuses, comes one time in 15.
func randInvocation(rnd *rand.Rand) string {
	pick := func(vs ...string) string { return vs[rnd.IntN(len(vs))] }
	or := func(good, bad []string) string {
		if rnd.IntN(15) == 0 {
			return pick(bad...)
		}
		return pick(good...)
	}
	str := func() string {
		return or([]string{`"echo"`, `""`, `"é 日本"`, `"t"`}, []string{`"a\"b"`, `"\u0041"`, "\"bad\xff\"", "\"ctl\x01\"", `null`, `5`})
	}
	fields := map[string]func() string{
		"taskId": str, "taskName": str, "functionName": str, "idempotencyKey": str, "callbackUrl": str, "inputRef": str,
		"executionMode": func() string {
			return or([]string{`"EXECUTION_MODE_SYNC"`, `"EXECUTION_MODE_ASYNC"`, `"EXECUTION_MODE_STREAM"`}, []string{`"SYNC"`, `"sync"`, `1`, `"1"`, `null`, `"NOPE"`})
		},
		"invocationType": func() string {
			return or([]string{`"INVOCATION_TYPE_EXISTING_TASK"`, `"INVOCATION_TYPE_NEW_TASK"`}, []string{`"EXISTING_TASK"`, `2`, `null`})
		},
		"wait": func() string { return or([]string{`true`, `false`}, []string{`"true"`, `1`, `null`, `tru`}) },
		"priority": func() string {
			return or([]string{`0`, `5`, `-3`, `-0`, `2147483647`, `-2147483648`}, []string{`007`, `1e2`, `1.0`, `"5"`, `2147483648`, `null`, `-`})
		},
		"parameters": func() string {
			ps := make([]string, rnd.IntN(3))
			for i := range ps {
				ps[i] = randParameter(rnd, pick, or)
			}
			return or([]string{"[" + strings.Join(ps, ",") + "]"}, []string{`null`, `{}`, `[1]`})
		},
		"task_id": func() string { return `"snake"` },
		"context": func() string { return `{"timeoutMs":"100"}` },
		"unknown": func() string { return `1` },
	}
	keys := []string{"taskId", "executionMode", "parameters"}
	for _, k := range []string{"taskName", "functionName", "idempotencyKey", "callbackUrl", "inputRef", "invocationType", "wait", "priority"} {
		if rnd.IntN(4) == 0 {
			keys = append(keys, k)
		}
	}
	if rnd.IntN(15) == 0 {
		keys = append(keys, pick("task_id", "context", "unknown", "taskId")) // taskId: twice
	}
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = pick("", " ", "\n") + `"` + k + `"` + pick(":", " : ") + fields[k]()
	}
	rnd.Shuffle(len(parts), func(i, j int) { parts[i], parts[j] = parts[j], parts[i] })
	return "{" + strings.Join(parts, ",") + "}" + or([]string{"", " \n"}, []string{"x", "}"})
}

func randParameter(rnd *rand.Rand, pick func(...string) string, or func(good, bad []string) string) string {
	const str, bytes = "type.googleapis.com/google.protobuf.StringValue", "type.googleapis.com/google.protobuf.BytesValue"
	value := or([]string{
		`{"@type":"` + str + `","value":"hello"}`,
		`{"@type":"` + str + `","value":""}`,
		`{"value":"hi é","@type":"` + str + `"}`,
		`{"@type":"` + bytes + `","value":"aGVsbG8="}`,
		`{"@type":"` + bytes + `","value":""}`,
	}, []string{
		`{"@type":"` + bytes + `","value":"aGVsbG8"}`,
		`{"@type":"` + bytes + `","value":"-_8="}`,
		`{"@type":"` + bytes + `","value":"aGVsbG9="}`,
		`{"@type":"` + bytes + `","value":"!!"}`,
		`{"@type":"type.googleapis.com/google.protobuf.Int32Value","value":5}`,
		`{"@type":"` + str + `","value":"x","extra":1}`,
		`{"@type":"` + str + `"}`,
		`{"@type":"` + str + `","@type":"` + str + `","value":"x"}`,
		`{}`, `null`,
	})
	fields := []string{`"name":` + or([]string{`"input"`, `""`}, []string{`null`}), `"value":` + value}
	if rnd.IntN(4) == 0 {
		fields = append(fields, or([]string{`"type":"bytes"`, `"required":true`, `"description":"d"`}, []string{`"required":"yes"`, `"other":1`}))
	}
	rnd.Shuffle(len(fields), func(i, j int) { fields[i], fields[j] = fields[j], fields[i] })
	return "{" + strings.Join(fields, ",") + "}"
}
