package mconsole

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"
)

// LocalHelp is what the C client prints after the machine's help text.
const LocalHelp = `Additional local mconsole commands:
    quit - Quit mconsole
    switch <socket-name> - Switch control to the given machine
    log -f <filename> - use contents of <filename> as UML log messages
    mconsole-version - version of this mconsole program
    int  - Interrupt UML session
`

// ClientVersion is the protocol version the client reports.
const ClientVersion = "uml_mconsole client version 2"

// logChunk is the most text one `log` request carries: the data field less
// "log " and the NUL.
const logChunk = MaxData - len("log ") - 2

// ErrQuit is returned by Console.Exec for the local `quit` command.
var ErrQuit = errors.New("quit")

// Console is an uml_mconsole session: the current target and how replies
// are printed. It reproduces the C client's local commands and output.
type Console struct {
	Out, Err io.Writer
	JSON     bool          // one {"ok","err","text"} object per reply
	Timeout  time.Duration // per reply packet; DefaultTimeout when zero
	// Interactive is set for the prompt loop: a failing `log -f` then
	// reports and continues instead of exiting as the C client does.
	Interactive bool

	target *Target
	client *Client
}

// Target returns the current target, or nil.
func (c *Console) Target() *Target { return c.target }

// Switch resolves name and makes it the target. Warnings go to Err.
func (c *Console) Switch(name string) error {
	t, err := Resolve(name, c.Err)
	if err != nil {
		return err
	}
	c.Close()
	c.target = t
	return nil
}

// Close closes the connection to the current target, if any.
func (c *Console) Close() {
	if c.client != nil {
		c.client.Close()
		c.client = nil
	}
}

// jsonReply is the --json rendering of one reply or local output.
type jsonReply struct {
	OK   bool   `json:"ok"`
	Err  int32  `json:"err"`
	Text string `json:"text"`
}

func (c *Console) emit(ok bool, code int32, text string, plain string) {
	if c.JSON {
		b, _ := json.Marshal(jsonReply{OK: ok, Err: code, Text: text})
		fmt.Fprintf(c.Out, "%s\n", b)
		return
	}
	io.WriteString(c.Out, plain)
}

// local prints the output of a local command.
func (c *Console) local(text string) { c.emit(true, 0, strings.TrimSuffix(text, "\n"), text) }

// failure reports a local failure on Err (and as a JSON object) and
// returns code 1.
func (c *Console) failure(msg string) uint32 {
	fmt.Fprintln(c.Err, msg)
	if c.JSON {
		c.emit(false, 1, msg, "")
	}
	return 1
}

// Exec runs one command line as the C client does: trailing whitespace is
// stripped, local commands are matched as prefixes (quit, help, switch,
// log, mconsole-version, int), anything else goes to the machine. It
// returns the C client's status (the last reply packet's err word), or
// ErrQuit.
func (c *Console) Exec(line string) (uint32, error) {
	cmd := strings.TrimRight(line, " \t\n\v\f\r")
	switch {
	case strings.HasPrefix(cmd, "quit"):
		return 0, ErrQuit
	case strings.HasPrefix(cmd, "help"):
		c.Remote(cmd)
		c.local(LocalHelp)
		return 0, nil
	case strings.HasPrefix(cmd, "switch"):
		name := strings.TrimLeft(cmd[len("switch"):], " \t\n\v\f\r")
		if err := c.Switch(name); err != nil {
			if c.JSON {
				c.emit(false, 1, err.Error(), "")
			}
			return 1, nil
		}
		c.local(fmt.Sprintf("Switched to '%s'\n", name))
		return 0, nil
	case strings.HasPrefix(cmd, "log"):
		return c.log(strings.TrimLeft(cmd[len("log"):], " \t\n\v\f\r"))
	case strings.HasPrefix(cmd, "mconsole-version"):
		c.local(ClientVersion + "\n")
		return 0, nil
	case strings.HasPrefix(cmd, "int"):
		return c.interrupt(), nil
	}
	return c.Remote(cmd), nil
}

// Remote sends cmd to the machine and prints the reply: "OK <text>" or
// "ERR <text>", ERR when any packet carried an error. It returns the last
// packet's err word, or 1 when nothing could be sent or received.
func (c *Console) Remote(cmd string) uint32 {
	if c.target == nil {
		return c.failure("uml_mconsole: no machine selected (use: switch <name>)")
	}
	cmd = RewriteUbdPaths(cmd, c.Err)
	if c.client == nil {
		cl, err := Dial(c.target.Socket)
		if err != nil {
			return c.failure(err.Error())
		}
		cl.Timeout = c.Timeout
		c.client = cl
	}
	resp, err := c.client.Command(cmd)
	if resp != nil && len(resp.Packets) > 0 {
		c.emit(resp.OK(), resp.Err(), resp.Text, resp.String()+"\n")
	}
	if err != nil {
		var se *SendError
		if errors.As(err, &se) {
			// A stale socket or a machine that went away: reconnect next time.
			c.Close()
			return c.failure(err.Error())
		}
		return c.failure("uml_mconsole: " + err.Error())
	}
	return resp.LastErr()
}

// log sends text as `log` requests of at most logChunk bytes, then a
// `log \n` unless the text ended in a newline; `-f file` logs a file.
// Like the C client it returns 0 whatever the replies were.
func (c *Console) log(arg string) (uint32, error) {
	newline := false
	if strings.HasPrefix(arg, "-f") {
		name := strings.TrimLeft(arg[2:], " \t\n\v\f\r")
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintf(c.Err, "opening file: %s\n", errText(err))
			if c.Interactive {
				return 1, nil
			}
			return 1, ErrQuit
		}
		defer f.Close()
		buf := make([]byte, logChunk)
		for {
			n, err := f.Read(buf)
			if n > 0 {
				c.Remote("log " + string(buf[:n]))
				newline = buf[n-1] == '\n'
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				fmt.Fprintf(c.Err, "reading file: %s\n", errText(err))
				if c.Interactive {
					return 1, nil
				}
				return 1, ErrQuit
			}
		}
	} else {
		for len(arg) > 0 {
			n := min(len(arg), logChunk)
			c.Remote("log " + arg[:n])
			newline = arg[n-1] == '\n'
			arg = arg[n:]
		}
	}
	if !newline {
		c.Remote("log \n")
	}
	return 0, nil
}

// interrupt sends SIGINT to the UML main process, which then shuts down
// cleanly.
func (c *Console) interrupt() uint32 {
	if c.target == nil || c.target.Pid == 0 {
		c.local("Cannot determine the PID of your UML session, not sending signal.\n")
		return 0
	}
	if err := syscall.Kill(c.target.Pid, syscall.SIGINT); err != nil {
		return c.failure(fmt.Sprintf("uml_mconsole: sending SIGINT to pid %d: %s", c.target.Pid, errText(err)))
	}
	return 0
}
