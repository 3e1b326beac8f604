// Package errtext renders errors the way the C tools print them, so our
// messages match theirs byte for byte.
package errtext

import (
	"errors"
	"io"
	"syscall"
)

// Strerror returns glibc's strerror text for the errno inside err ("No such
// file or directory"; Go spells them in lower case). An unexpected end of
// file, which the C tools report as "Success", reads "Unexpected end of
// file". Other errors print as they are.
func Strerror(err error) string {
	var en syscall.Errno
	if errors.As(err, &en) {
		return Capitalize(en.Error())
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "Unexpected end of file"
	}
	return err.Error()
}

// Capitalize raises the first letter of s if it is a lower-case ASCII
// letter.
func Capitalize(s string) string {
	if s != "" && s[0] >= 'a' && s[0] <= 'z' {
		return string(s[0]-'a'+'A') + s[1:]
	}
	return s
}
