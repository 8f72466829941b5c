package process

// What a file must be for this node to execute it, read from its first
// bytes when a task is registered: an ELF executable for the node's
// architecture whose loader is present, a script whose #! line names an
// interpreter that exists, or anything a binfmt_misc handler of the node
// runs. Anything else would fail only at run time, with "exec format
// error" or a "no such file" about a file that exists.

import (
	"bytes"
	"debug/elf"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/spear-go/spear/internal/errdefs"
)

// headSize is how much of a file is read to tell what it is: the kernel
// reads as much for a #! line (BINPRM_BUF_SIZE).
const headSize = 256

// binfmtDir is where the kernel lists its binfmt_misc handlers.
const binfmtDir = "/proc/sys/fs/binfmt_misc"

// elfMachines are the ELF machines a node of each architecture runs, its
// own first (a 64-bit kernel may run its 32-bit sibling's executables).
var elfMachines = map[string][]elf.Machine{
	"amd64":   {elf.EM_X86_64, elf.EM_386},
	"386":     {elf.EM_386},
	"arm64":   {elf.EM_AARCH64, elf.EM_ARM},
	"arm":     {elf.EM_ARM},
	"riscv64": {elf.EM_RISCV},
	"ppc64":   {elf.EM_PPC64},
	"ppc64le": {elf.EM_PPC64},
	"s390x":   {elf.EM_S390},
	"loong64": {elf.EM_LOONGARCH},
	"mips64":  {elf.EM_MIPS},
	"mips":    {elf.EM_MIPS},
}

// archNames names an ELF machine as Go names architectures.
var archNames = map[elf.Machine]string{
	elf.EM_X86_64: "amd64", elf.EM_386: "386", elf.EM_AARCH64: "arm64", elf.EM_ARM: "arm",
	elf.EM_RISCV: "riscv64", elf.EM_PPC64: "ppc64", elf.EM_S390: "s390x",
	elf.EM_LOONGARCH: "loong64", elf.EM_MIPS: "mips",
}

// inspectArtifact checks that the file at path is something this node can
// execute; binfmt is the binfmt_misc directory (binfmtDir).
func inspectArtifact(path, binfmt string) error {
	f, err := os.Open(path)
	if err != nil {
		return errdefs.ArtifactUnreadable.New("process: artifact %q: %v", path, err)
	}
	defer f.Close()
	head := make([]byte, headSize)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return errdefs.ArtifactUnreadable.New("process: artifact %q: %v", path, err)
	}
	head = head[:n]
	if binfmtHandles(binfmt, path, head) {
		return nil
	}
	switch {
	case bytes.HasPrefix(head, []byte(elf.ELFMAG)):
		return inspectELF(path, f)
	case bytes.HasPrefix(head, []byte("#!")):
		return inspectShebang(path, head)
	}
	what := "a file that is neither an executable nor a script"
	if isText(head) {
		what = "a script without a #! line"
	}
	return errdefs.ArtifactNotRunnable.New("process: artifact %q is %s: a script needs a first line naming its interpreter, e.g. #!/bin/sh; "+
		"a program must be an ELF executable for %s", path, what, goruntime.GOARCH)
}

// inspectELF checks an ELF file: an executable, for this architecture,
// with its loader (when dynamically linked) on the node.
func inspectELF(path string, f *os.File) error {
	ef, err := elf.NewFile(f)
	if err != nil {
		return errdefs.ArtifactNotRunnable.New("process: artifact %q is not a valid ELF file: %v", path, err)
	}
	if !runsHere(ef.Machine) {
		return errdefs.ArtifactWrongArch.New("process: artifact %q is built for %s, this node is %s: build it for %s (e.g. GOARCH=%s)",
			path, archName(ef.Machine), goruntime.GOARCH, goruntime.GOARCH, goruntime.GOARCH)
	}
	if ef.Type != elf.ET_EXEC && ef.Type != elf.ET_DYN {
		return errdefs.ArtifactNotRunnable.New("process: artifact %q is an ELF %s, not an executable: link it into a program", path, elfTypeName(ef.Type))
	}
	for _, p := range ef.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(p.Open(), 4096))
		if err != nil {
			return errdefs.ArtifactNotRunnable.New("process: artifact %q: reading its ELF loader: %v", path, err)
		}
		loader := string(bytes.TrimRight(b, "\x00"))
		if code, why := checkInterpreter(loader); why != "" {
			return code.New("process: artifact %q is linked against the loader %s, which %s on this node "+
				"(built for another C library or distribution?): link it statically, or install the loader", path, loader, why)
		}
	}
	return nil
}

// inspectShebang checks a script's #! line: it names an interpreter, and
// an absolute one that exists and can be executed.
func inspectShebang(path string, head []byte) error {
	line, _, _ := bytes.Cut(head[2:], []byte("\n"))
	fields := strings.Fields(string(line))
	if len(fields) == 0 {
		return errdefs.ArtifactNotRunnable.New("process: artifact %q has a #! line without an interpreter: name one, e.g. #!/bin/sh", path)
	}
	interp := fields[0]
	if !filepath.IsAbs(interp) {
		return nil // resolved by the kernel from the work dir: not ours to guess
	}
	if code, why := checkInterpreter(interp); why != "" {
		return code.New("process: artifact %q names the interpreter %s in its #! line, which %s on this node: "+
			"install it, or name one the node has (e.g. #!/bin/sh, or #!/usr/bin/env NAME to search PATH)", path, interp, why)
	}
	return nil
}

// checkInterpreter says why an interpreter cannot be executed, with the
// code its exec would fail with (see execError), or "".
func checkInterpreter(path string) (code errdefs.Code, why string) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return errdefs.ArtifactNoInterpreter, "does not exist"
	case err != nil:
		return errdefs.ArtifactNoInterpreter, "cannot be read (" + err.Error() + ")"
	case !fi.Mode().IsRegular():
		return errdefs.ArtifactNoInterpreter, "is not a regular file"
	case fi.Mode().Perm()&0o111 == 0:
		return errdefs.ArtifactNotExecutable, "is not executable"
	}
	return code, ""
}

func runsHere(m elf.Machine) bool {
	for _, ok := range elfMachines[goruntime.GOARCH] {
		if m == ok {
			return true
		}
	}
	return false
}

func archName(m elf.Machine) string {
	if n, ok := archNames[m]; ok {
		return n
	}
	return strings.ToLower(strings.TrimPrefix(m.String(), "EM_"))
}

func elfTypeName(t elf.Type) string {
	switch t {
	case elf.ET_REL:
		return "relocatable object (.o)"
	case elf.ET_CORE:
		return "core dump"
	}
	return t.String()
}

// isText reports whether head looks like text: no NUL, and no control
// characters but those of text.
func isText(head []byte) bool {
	if len(head) == 0 {
		return true
	}
	for _, c := range head {
		if c == 0 || (c < 0x20 && c != '\n' && c != '\r' && c != '\t' && c != '\f') {
			return false
		}
	}
	return true
}

// binfmtHandles reports whether an enabled binfmt_misc handler of the node
// runs the file (its magic bytes, or its extension, match): qemu-user for
// other architectures, wine, a JVM.
func binfmtHandles(dir, path string, head []byte) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if e.Name() == "register" || e.Name() == "status" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err == nil && binfmtMatches(string(b), path, head) {
			return true
		}
	}
	return false
}

// binfmtMatches matches one handler, as the kernel lists it:
// "enabled", then "offset N", "magic HEX" and "mask HEX", or "extension .EXT".
func binfmtMatches(entry, path string, head []byte) bool {
	var magic, mask []byte
	offset, enabled, ext := 0, false, ""
	for _, line := range strings.Split(entry, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch k {
		case "enabled":
			enabled = true
		case "offset":
			offset, _ = strconv.Atoi(v)
		case "magic":
			magic, _ = hex.DecodeString(v)
		case "mask":
			mask, _ = hex.DecodeString(v)
		case "extension":
			ext = v
		}
	}
	switch {
	case !enabled:
		return false
	case ext != "":
		return strings.TrimPrefix(filepath.Ext(path), ".") == strings.TrimPrefix(ext, ".")
	case len(magic) == 0 || offset+len(magic) > len(head):
		return false
	}
	for i, m := range magic {
		c := head[offset+i]
		if i < len(mask) {
			c &= mask[i]
		}
		if c != m {
			return false
		}
	}
	return true
}

// execError names the declared code of a failed exec of the artifact at
// path, with a hint, or returns nil for an error of another kind.
func execError(path string, err error) error {
	// Not the path exec was given: a sandboxed run executes
	// /proc/self/fd/3.
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	switch {
	case errors.Is(err, syscall.ENOEXEC):
		return errdefs.ArtifactNotRunnable.New("process: cannot execute %q: %v: not an executable for this node (%s), nor a script with a #! line (e.g. #!/bin/sh)",
			path, err, goruntime.GOARCH)
	case errors.Is(err, fs.ErrPermission):
		return errdefs.ArtifactNotExecutable.New("process: cannot execute %q: %v: it (or its interpreter) lacks execute permission, "+
			"lies on a noexec mount, or the sandbox denies it", path, err)
	case errors.Is(err, fs.ErrNotExist):
		if _, serr := os.Stat(path); serr == nil {
			return errdefs.ArtifactNoInterpreter.New("process: cannot execute %q: %v: the file exists, so its interpreter (#! line) "+
				"or ELF loader is missing on this node", path, err)
		}
		return errdefs.ArtifactNotFound.New("process: cannot execute %q: %v", path, err)
	}
	return nil
}
