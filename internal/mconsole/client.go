package mconsole

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/umltools/umltools/internal/errtext"

	"golang.org/x/sys/unix"
)

// DefaultTimeout is how long a Client waits for each reply packet.
const DefaultTimeout = 10 * time.Second

// Client talks to one UML's mconsole socket.
//
// Unlike the C client, it connect()s its socket to the UML's. Linux exempts
// a datagram sender from the receiver's max_dgram_qlen limit (10 by default)
// when the receiver is connected back to it, so long streamed replies
// (`sysrq m`, `stack 1`: 15–30 packets sent in one burst by a non-blocking
// kernel socket) all arrive instead of being dropped after the 11th. Every
// packet read also has a timeout, so a lost tail can never hang the client.
type Client struct {
	path    string
	conn    *net.UnixConn
	Timeout time.Duration // per packet; DefaultTimeout when zero
}

// SendError reports that a request could not be sent to the socket (the C
// client's "Sending command to '<path>' : <strerror>").
type SendError struct {
	Path string
	Err  error
}

func (e *SendError) Error() string {
	return fmt.Sprintf("Sending command to '%s' : %s", e.Path, errText(e.Err))
}

func (e *SendError) Unwrap() error { return e.Err }

// Dial opens a client socket, autobound to a unique abstract address, and
// connects it to the mconsole socket at path.
func Dial(path string) (*Client, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("mconsole: socket: %w", err)
	}
	// An empty name makes the kernel pick a unique abstract address.
	if err := unix.Bind(fd, &unix.SockaddrUnix{}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mconsole: bind: %w", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, &SendError{Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), "mconsole:"+path)
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("mconsole: %s: %w", path, err)
	}
	return &Client{path: path, conn: c.(*net.UnixConn)}, nil
}

// Close closes the client socket.
func (c *Client) Close() error { return c.conn.Close() }

// Path returns the socket path the client is connected to.
func (c *Client) Path() string { return c.path }

// Response is the whole answer to one request.
type Response struct {
	Packets []Reply
	// Text is every packet's text concatenated.
	Text string
}

// OK reports whether no packet carried an error: the C client prints "OK"
// then, "ERR" otherwise.
func (r *Response) OK() bool {
	for _, p := range r.Packets {
		if p.Err != 0 {
			return false
		}
	}
	return true
}

// Err returns the first non-zero error code, as a signed value (so -19 for
// -ENODEV), or 0.
func (r *Response) Err() int32 {
	for _, p := range r.Packets {
		if p.Err != 0 {
			return int32(p.Err)
		}
	}
	return 0
}

// LastErr returns the err word of the last packet: the C client's return
// value, whose low 8 bits become its exit code.
func (r *Response) LastErr() uint32 {
	if len(r.Packets) == 0 {
		return 0
	}
	return r.Packets[len(r.Packets)-1].Err
}

// String renders the response as the C client prints it, without the
// final newline: "OK <text>" or "ERR <text>".
func (r *Response) String() string {
	if r.OK() {
		return "OK " + r.Text
	}
	return "ERR " + r.Text
}

// ErrTimeout is returned (wrapped) when a reply packet did not arrive in
// time; the Response holds what did arrive.
var ErrTimeout = errors.New("timed out waiting for a reply")

// Command sends text as one request and collects reply packets until one
// without More. A version-0 style raw reply (from a driver rejecting our
// magic) ends the response as a single error packet. On a timeout the
// partial Response is returned with an error wrapping ErrTimeout.
func (c *Client) Command(text string) (*Response, error) {
	return c.send(NewRequest(text).Encode())
}

func (c *Client) send(req []byte) (*Response, error) {
	if _, err := c.conn.Write(req); err != nil {
		return nil, &SendError{Path: c.path, Err: unwrapOp(err)}
	}
	return c.receive()
}

// receive collects the packets of one response.
func (c *Client) receive() (*Response, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	resp := &Response{}
	var text strings.Builder
	buf := make([]byte, ReplySize+64)
	for {
		c.conn.SetReadDeadline(time.Now().Add(timeout))
		n, err := c.conn.Read(buf)
		if err != nil {
			resp.Text = text.String()
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return resp, fmt.Errorf("%s: %w after %d packet(s)", c.path, ErrTimeout, len(resp.Packets))
			}
			return resp, fmt.Errorf("receiving from %s: %w", c.path, unwrapOp(err))
		}
		if string(buf[:n]) == Version0Reply {
			// The raw text reply to a request with a bad magic.
			p := Reply{Err: 1, Text: strings.TrimPrefix(string(buf[:n]), "ERR ")}
			resp.Packets = append(resp.Packets, p)
			text.WriteString(p.Text)
			break
		}
		p, err := DecodeReply(buf[:n])
		if err != nil {
			resp.Text = text.String()
			return resp, fmt.Errorf("reply from %s: %w", c.path, err)
		}
		resp.Packets = append(resp.Packets, p)
		text.WriteString(p.Text)
		if !p.More {
			break
		}
	}
	resp.Text = text.String()
	return resp, nil
}

// unwrapOp strips *net.OpError and *os.SyscallError wrappers so messages
// read like the C tool's strerror text.
func unwrapOp(err error) error {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// errText renders err as glibc's strerror does.
func errText(err error) string { return errtext.Strerror(unwrapOp(err)) }
