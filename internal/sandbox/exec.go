package sandbox

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
)

// ErrNoExec is returned for images the exec path cannot run (the guest
// sees ENOEXEC).
var ErrNoExec = errors.New("not an executable format")

// interpHeader finds the PT_INTERP program header of a 64-bit x86-64 ELF
// image: its file offset and size, or ok=false for a static ELF.
func interpHeader(image []byte) (off, size uint64, ok bool, err error) {
	f, err := elf.NewFile(bytes.NewReader(image))
	if err != nil {
		return 0, 0, false, fmt.Errorf("%w: %v", ErrNoExec, err)
	}
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 || (f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN) {
		return 0, 0, false, fmt.Errorf("%w: %v %v %v", ErrNoExec, f.Class, f.Machine, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		if p.Filesz == 0 || p.Off > uint64(len(image)) || p.Filesz > uint64(len(image))-p.Off {
			return 0, 0, false, fmt.Errorf("%w: PT_INTERP outside the file", ErrNoExec)
		}
		return p.Off, p.Filesz, true, nil
	}
	return 0, 0, false, nil
}

// Interp returns the program interpreter (PT_INTERP) an x86-64 ELF image
// asks for, or "" for a static executable. Other images give ErrNoExec.
func Interp(image []byte) (string, error) {
	off, size, ok, err := interpHeader(image)
	if err != nil || !ok {
		return "", err
	}
	b := image[off : off+size]
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b), nil
}

// PatchInterp returns a copy of a dynamic ELF image whose PT_INTERP names
// path instead (NUL-padded to the original size), so that the host loads
// the engine's copy of the image's dynamic loader. path must fit the
// original field (27 bytes for /lib64/ld-linux-x86-64.so.2); ExecDir's
// paths are short for that reason.
func PatchInterp(image []byte, path string) ([]byte, error) {
	off, size, ok, err := interpHeader(image)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: static executable has no PT_INTERP", ErrNoExec)
	}
	if uint64(len(path))+1 > size || bytes.IndexByte([]byte(path), 0) >= 0 {
		return nil, fmt.Errorf("interpreter path %q does not fit PT_INTERP (%d bytes)", path, size)
	}
	out := append([]byte(nil), image...)
	field := out[off : off+size]
	clear(field)
	copy(field, path)
	return out, nil
}

// shebangMax is the kernel's BINPRM_BUF_SIZE: how much of a script's
// start it reads (zero-filled when the file is shorter).
const shebangMax = 256

// Shebang parses a script's "#!" line as Linux's binfmt_script does. The
// interpreter is the first word after "#!" (leading spaces and tabs
// skipped; a word ends at a space, tab or NUL); if a blank ends it, the
// rest of the line with trailing blanks removed is one optional argument
// (inner spaces kept, cut at a NUL). head is the start of the file. ok is
// false when it does not start with "#!". A line without an interpreter,
// or whose interpreter runs past the 256 bytes read, is ErrNoExec.
func Shebang(head []byte) (interp, arg string, ok bool, err error) {
	if !bytes.HasPrefix(head, []byte("#!")) {
		return "", "", false, nil
	}
	var buf [shebangMax]byte
	copy(buf[:], head)
	blank := func(c byte) bool { return c == ' ' || c == '\t' }
	term := func(c byte) bool { return c == ' ' || c == '\t' || c == 0 }
	nonBlank := func(i, end int) int {
		for i < end && blank(buf[i]) {
			i++
		}
		return i
	}
	end := bytes.IndexByte(buf[:], '\n')
	if end < 0 {
		// No newline: the last byte is reserved, and the interpreter must
		// end within what was read.
		end = shebangMax - 1
		i := nonBlank(2, end)
		if i == end {
			return "", "", true, fmt.Errorf("%w: empty #! line", ErrNoExec)
		}
		for i < end && !term(buf[i]) {
			i++
		}
		if i == end {
			return "", "", true, fmt.Errorf("%w: #! interpreter path truncated", ErrNoExec)
		}
	}
	for end > 2 && blank(buf[end-1]) {
		end--
	}
	name := nonBlank(2, end)
	if name == end || buf[name] == 0 {
		return "", "", true, fmt.Errorf("%w: no interpreter on the #! line", ErrNoExec)
	}
	sep := name
	for sep < end && !term(buf[sep]) {
		sep++
	}
	interp = string(buf[name:sep])
	if sep < end && buf[sep] != 0 {
		a := buf[nonBlank(sep, end):end]
		if i := bytes.IndexByte(a, 0); i >= 0 {
			a = a[:i]
		}
		arg = string(a)
	}
	return interp, arg, true, nil
}

// ShebangArgv builds the argv the interpreter of a script runs with:
// interpreter, the optional argument, the script's path, then the original
// arguments after argv[0].
func ShebangArgv(interp, arg, script string, argv []string) []string {
	out := []string{interp}
	if arg != "" {
		out = append(out, arg)
	}
	out = append(out, script)
	if len(argv) > 1 {
		out = append(out, argv[1:]...)
	}
	return out
}
