package errtext

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"testing"
)

func TestStrerror(t *testing.T) {
	_, statErr := os.Stat("/nonexistent/x")
	tests := []struct {
		err  error
		want string
	}{
		{syscall.ENOENT, "No such file or directory"},
		{statErr, "No such file or directory"},
		{fmt.Errorf("wrapped: %w", syscall.ECONNREFUSED), "Connection refused"},
		{io.ErrUnexpectedEOF, "Unexpected end of file"},
		{io.EOF, "Unexpected end of file"},
		{errors.New("plain"), "plain"},
	}
	for _, tt := range tests {
		if got := Strerror(tt.err); got != tt.want {
			t.Errorf("%v: %q, want %q", tt.err, got, tt.want)
		}
	}
}
