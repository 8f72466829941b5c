package process

import (
	"debug/elf"
	"encoding/hex"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"

	"github.com/spear-go/spear/internal/errdefs"
	"github.com/spear-go/spear/internal/runtime/conformance"
)

// TestInspectArtifact: what a file is decides whether it is refused at
// registration, with which code and hint; a binfmt_misc handler that runs
// a file makes it acceptable whatever it is.
func TestInspectArtifact(t *testing.T) {
	dir := t.TempDir()
	noBinfmt := filepath.Join(dir, "no-binfmt")
	qemu := filepath.Join(dir, "binfmt")
	if err := os.MkdirAll(qemu, 0o755); err != nil {
		t.Fatal(err)
	}
	foreign := conformance.ELFExecutable(conformance.ForeignMachine(), elf.ET_EXEC, "")
	// The handler qemu-user registers, for the foreign machine: the ELF
	// header up to e_machine, with a mask that ignores the ABI bytes and
	// the low bit of e_type.
	magic, mask := foreign[:20], []byte(strings.Repeat("\xff", 20))
	copy(mask[7:16], make([]byte, 9))
	mask[16] = 0xfe
	entry := "enabled\ninterpreter /usr/bin/qemu-static\nflags: F\noffset 0\nmagic " + hex.EncodeToString(magic) + "\nmask " + hex.EncodeToString(mask) + "\n"
	write(t, filepath.Join(qemu, "qemu-foreign"), []byte(entry), 0o644)
	write(t, filepath.Join(qemu, "status"), []byte("enabled\n"), 0o644)
	write(t, filepath.Join(qemu, "jar"), []byte("enabled\ninterpreter /usr/bin/jexec\nextension .jar\n"), 0o644)
	plain := filepath.Join(dir, "plain-interp")
	write(t, plain, []byte("#!/bin/sh\n"), 0o644)

	cases := []struct {
		name, file string
		content    []byte
		binfmt     string
		code, hint string // code "" means accepted
	}{
		{"script", "ok.sh", []byte("#!/bin/sh\necho hi\n"), noBinfmt, "", ""},
		{"script with env", "env.sh", []byte("#! /usr/bin/env sh -e\necho hi\n"), noBinfmt, "", ""},
		{"relative interpreter", "rel.sh", []byte("#!sh\necho hi\n"), noBinfmt, "", ""},
		{"native ELF", "native", conformance.ELFExecutable(nativeOr(t), elf.ET_EXEC, ""), noBinfmt, "", ""},
		{"native PIE with its loader", "pie", conformance.ELFExecutable(nativeOr(t), elf.ET_DYN, "/bin/sh"), noBinfmt, "", ""},
		{"foreign ELF", "foreign", foreign, noBinfmt, "ARTIFACT_WRONG_ARCH", "this node is " + goruntime.GOARCH},
		{"foreign ELF with qemu", "foreign", foreign, qemu, "", ""},
		{"jar by extension", "app.jar", []byte("PK\x03\x04 zip"), qemu, "", ""},
		{"jar without handler", "app.jar", []byte("PK\x03\x04 zip"), noBinfmt, "ARTIFACT_NOT_RUNNABLE", "neither an executable nor a script"},
		{"script without #!", "plain.sh", []byte("echo hi\n"), noBinfmt, "ARTIFACT_NOT_RUNNABLE", "e.g. #!/bin/sh"},
		{"empty file", "empty", nil, noBinfmt, "ARTIFACT_NOT_RUNNABLE", "a script without a #! line"},
		{"random bytes", "random", []byte{0x00, 0x9f, 0x13, 0x07}, noBinfmt, "ARTIFACT_NOT_RUNNABLE", "neither an executable nor a script"},
		{"#! without interpreter", "bare.sh", []byte("#!  \necho\n"), noBinfmt, "ARTIFACT_NOT_RUNNABLE", "without an interpreter"},
		{"missing interpreter", "py.sh", []byte("#!/nonexistent/python3\nprint(1)\n"), noBinfmt, "ARTIFACT_NO_INTERPRETER", "/nonexistent/python3"},
		{"interpreter not executable", "plain.sh", []byte("#!" + plain + "\n"), noBinfmt, "ARTIFACT_NOT_EXECUTABLE", "is not executable"},
		{"interpreter a directory", "dir.sh", []byte("#!/tmp\n"), noBinfmt, "ARTIFACT_NO_INTERPRETER", "is not a regular file"},
		{"missing loader", "musl", conformance.ELFExecutable(nativeOr(t), elf.ET_DYN, "/lib/ld-nonexistent.so.1"), noBinfmt, "ARTIFACT_NO_INTERPRETER", "link it statically"},
		{"object file", "x.o", conformance.ELFExecutable(nativeOr(t), elf.ET_REL, ""), noBinfmt, "ARTIFACT_NOT_RUNNABLE", "relocatable object"},
		{"truncated ELF", "trunc", []byte("\x7fELF\x02\x01"), noBinfmt, "ARTIFACT_NOT_RUNNABLE", "not a valid ELF file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), tc.file)
			write(t, p, tc.content, 0o755)
			err := inspectArtifact(p, tc.binfmt)
			if got := errdefs.CodeOf(err); got != tc.code || (err != nil && !strings.Contains(err.Error(), tc.hint)) {
				t.Fatalf("inspectArtifact: %v (code %q), want code %q with %q", err, got, tc.code, tc.hint)
			}
		})
	}
}

func nativeOr(t *testing.T) elf.Machine {
	m := conformance.NativeMachine()
	if m == elf.EM_NONE {
		t.Skip("no native ELF machine known for " + goruntime.GOARCH)
	}
	return m
}

func write(t *testing.T, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
}
