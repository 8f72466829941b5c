package task

import (
	"reflect"
	"testing"
)

func TestArtifactOr(t *testing.T) {
	task := Artifact{ID: "a1", Type: "process", Location: "/old", Version: "1", Checksum: "sha256:old", Metadata: map[string]string{"k": "v"}}
	tests := []struct {
		name string
		a    Artifact
		want Artifact
	}{
		{"empty keeps all but the checksum", Artifact{},
			Artifact{ID: "a1", Type: "process", Location: "/old", Version: "1", Metadata: map[string]string{"k": "v"}}},
		{"given fields win", Artifact{Type: "wasm", Location: "/new", Version: "2", Checksum: "sha256:new", Metadata: map[string]string{}},
			Artifact{ID: "a1", Type: "wasm", Location: "/new", Version: "2", Checksum: "sha256:new", Metadata: map[string]string{}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.a.Or(task); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Or = %+v, want %+v", got, tc.want)
			}
		})
	}
}
