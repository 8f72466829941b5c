package conformance

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	goruntime "runtime"
)

// ForeignMachine is an ELF machine this node cannot run: arm64 on every
// other architecture, amd64 on arm64.
func ForeignMachine() elf.Machine {
	if goruntime.GOARCH == "arm64" {
		return elf.EM_X86_64
	}
	return elf.EM_AARCH64
}

// NativeMachine is this node's own ELF machine (amd64 or arm64; others
// get EM_NONE).
func NativeMachine() elf.Machine {
	switch goruntime.GOARCH {
	case "amd64":
		return elf.EM_X86_64
	case "arm64":
		return elf.EM_AARCH64
	}
	return elf.EM_NONE
}

// ELFExecutable is the start of a 64-bit little-endian ELF executable for
// machine m, with only its header and, when interp is set, a PT_INTERP
// program header naming interp as its loader: enough for a check of what
// a file is, not to run.
func ELFExecutable(m elf.Machine, typ elf.Type, interp string) []byte {
	const ehsize, phsize = 64, 56
	h := elf.Header64{
		Type: uint16(typ), Machine: uint16(m), Version: uint32(elf.EV_CURRENT),
		Ehsize: ehsize, Phentsize: phsize, Shentsize: 64,
	}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS], h.Ident[elf.EI_DATA], h.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	var progs []elf.Prog64
	if interp != "" {
		h.Phoff, h.Phnum = ehsize, 1
		progs = append(progs, elf.Prog64{Type: uint32(elf.PT_INTERP), Off: ehsize + phsize, Filesz: uint64(len(interp) + 1), Memsz: uint64(len(interp) + 1), Align: 1})
	}
	var b bytes.Buffer
	_ = binary.Write(&b, binary.LittleEndian, h)
	_ = binary.Write(&b, binary.LittleEndian, progs)
	if interp != "" {
		b.WriteString(interp + "\x00")
	}
	return b.Bytes()
}
