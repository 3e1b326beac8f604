package watchdog

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/mconsole"
	"github.com/umltools/umltools/internal/testutil"
	"golang.org/x/sys/unix"
)

const cWatchdog = "/usr/bin/uml_watchdog"

// TestMain doubles as the SIGINT-counting target of the escalation test.
func TestMain(m *testing.M) {
	if os.Getenv("WATCHDOG_TEST_TARGET") == "1" {
		target()
		return
	}
	os.Exit(m.Run())
}

// target prints "ready", then "INT <n>" for each SIGINT, until killed.
func target() {
	c := make(chan os.Signal, 4)
	signal.Notify(c, syscall.SIGINT)
	fmt.Println("ready")
	for n := 1; ; n++ {
		<-c
		fmt.Printf("INT %d\n", n)
	}
}

func TestParsePid(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"1234", 1234, true}, {" 42", 42, true}, {"\t+42", 42, true}, {"0x1f", 31, true}, {"0X1F", 31, true},
		{"010", 8, true}, {"2147483647", 2147483647, true},
		{"", 0, false}, {"0", 0, false}, {"-1", 0, false}, {"12x", 0, false}, {"0x", 0, false}, {"08", 0, false},
		{"2147483648", 0, false}, {"4294967296", 0, false}, {"1 ", 0, false}, {"+-1", 0, false}, {"abc", 0, false},
	} {
		got, ok := parsePid(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parsePid(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// TestArgs compares argument handling with Debian's uml_watchdog: bad
// arguments exit 1 with no output; good ones write the ready NUL and,
// with stdin at EOF, exit 0. Where ours refuses what the C tool accepts
// (pids that would signal a group or every process) the case says so.
func TestArgs(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	sock := filepath.Join(t.TempDir(), "notify")
	ours := testutil.Bin(t, "uml_watchdog")
	_, haveC := os.Stat(cWatchdog)
	for _, tc := range []struct {
		args    []string
		ok      bool
		cDiffer bool // the C tool accepts it
	}{
		{nil, false, false},
		{[]string{"-pid"}, false, false},
		{[]string{"-pid", "abc"}, false, false},
		{[]string{"-pid", "1x"}, false, false},
		{[]string{"-pid", "999999999"}, false, false},
		{[]string{"-mconsole"}, false, false},
		{[]string{"-foo"}, false, false},
		{[]string{"-foo", "bar"}, false, false},
		{[]string{"pid", self}, false, false},
		{[]string{"-pid", self}, true, false},
		{[]string{"-pid", " " + self}, true, false},
		{[]string{"-pid", "0x" + strconv.FormatInt(int64(os.Getpid()), 16)}, true, false},
		{[]string{"-pid", self, "extra"}, true, false},
		{[]string{"-pid", self, "-mconsole", sock}, true, false},
		{[]string{"-mconsole", sock}, true, false},
		{[]string{"-mconsole", "/nonexistent/sock"}, true, false},
		{[]string{"-mconsole", sock, "-pid", "abc"}, true, false},
		{[]string{"-pid", "0"}, false, true},
		{[]string{"-pid", "-1"}, false, true},
		{[]string{"-pid", ""}, false, true},
	} {
		want := testutil.Result{Code: 1}
		if tc.ok {
			want = testutil.Result{Stdout: "\x00"}
		}
		r := runBin(t, ours, nil, tc.args...)
		if r != want {
			t.Errorf("ours %q: %+v, want %+v", tc.args, r, want)
		}
		if haveC != nil {
			continue
		}
		c := runBin(t, cWatchdog, nil, tc.args...)
		if c.Code == 127 {
			testutil.Skip(t, "%s vanished during the test (uml-utilities being reinstalled?)", cWatchdog)
		}
		if tc.cDiffer {
			if c.Code != 0 || c.Stdout != "\x00" {
				t.Errorf("debian %q: %+v; the test expects it to accept this", tc.args, c)
			}
		} else if c != r {
			t.Errorf("%q: debian %+v, ours %+v", tc.args, c, r)
		}
	}
	for _, a := range []string{"--help", "-h", "--version"} {
		r := testutil.RunIn(Main(func(string) string { return "" }), "uml_watchdog", a)
		if r.Code != 0 || r.Stdout == "" || r.Stderr != "" {
			t.Errorf("%s: %+v", a, r)
		}
	}
}

// runBin runs a watchdog binary with stdin /dev/null (or the given file)
// and env additions.
func runBin(t *testing.T, bin string, env []string, args ...string) testutil.Result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	cmd.Stdin = devnull
	cmd.Env = append(os.Environ(), env...)
	return testutil.RunCmd(t, cmd, 20*time.Second)
}

func TestTimeout(t *testing.T) {
	// The default the kernel gets: 60 s, whatever is unset or unusable.
	if DefaultTimeout != 60*time.Second {
		t.Fatalf("DefaultTimeout = %v", DefaultTimeout)
	}
	if got, _, _ := (&Watchdog{}).settings(); got != 60*time.Second {
		t.Errorf("a Watchdog with no timeout waits %v, want 60s", got)
	}
	for in, want := range map[string]time.Duration{
		"": 60 * time.Second, "0.25": 250 * time.Millisecond, "5": 5 * time.Second, " 2 ": 2 * time.Second,
		"0": 60 * time.Second, "-3": 60 * time.Second, "abc": 60 * time.Second, "NaN": 60 * time.Second, "1e9": 60 * time.Second,
	} {
		if got := ParseTimeout(in); got != want {
			t.Errorf("ParseTimeout(%q) = %v, want %v", in, got, want)
		}
	}
}

// kills records the signals a Watchdog sends, with their times.
type kills struct {
	mu  sync.Mutex
	at  []time.Time
	sig []syscall.Signal
	pid []int
}

func (k *kills) kill(pid int, s syscall.Signal) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.at, k.sig, k.pid = append(k.at, time.Now()), append(k.sig, s), append(k.pid, pid)
	return nil
}

func (k *kills) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.sig)
}

// TestPingsThenEOF: pings more often than the timeout keep it quiet for
// many timeouts; EOF exits 0.
func TestPingsThenEOF(t *testing.T) {
	r, w := io.Pipe()
	var k kills
	var out bytes.Buffer
	wd := &Watchdog{Config: Config{Pid: 4242}, Timeout: 150 * time.Millisecond, Kill: k.kill}
	done := make(chan int)
	go func() { done <- wd.Run(r, &out) }()
	for i := 0; i < 15; i++ {
		time.Sleep(50 * time.Millisecond)
		w.Write([]byte{'x'})
	}
	w.Close()
	if rc := <-done; rc != 0 {
		t.Errorf("rc %d after EOF, want 0", rc)
	}
	if k.count() != 0 {
		t.Errorf("signals sent despite pings: %v", k.sig)
	}
	if out.String() != "\x00" {
		t.Errorf("stdout %q, want one NUL", out.String())
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("boom") }

func TestReadError(t *testing.T) {
	var k kills
	wd := &Watchdog{Config: Config{Pid: 4242}, Timeout: time.Hour, Kill: k.kill}
	if rc := wd.Run(errReader{}, io.Discard); rc != 1 || k.count() != 0 {
		t.Errorf("rc %d, signals %v; want 1 and none", rc, k.sig)
	}
}

// TestTimeoutPid: after the timeout, SIGINT, grace, SIGINT, grace,
// SIGKILL to the pid, then exit 1; a ping before the timeout delays it.
func TestTimeoutPid(t *testing.T) {
	r, w := io.Pipe()
	defer w.Close()
	var k kills
	wd := &Watchdog{Config: Config{Pid: 4242}, Timeout: 200 * time.Millisecond, Grace: 100 * time.Millisecond, Kill: k.kill}
	start := time.Now()
	done := make(chan int)
	go func() { done <- wd.Run(r, io.Discard) }()
	time.Sleep(120 * time.Millisecond)
	w.Write([]byte{0}) // restarts the 200 ms
	rc := <-done
	if rc != 1 {
		t.Errorf("rc %d, want 1", rc)
	}
	want := []syscall.Signal{syscall.SIGINT, syscall.SIGINT, syscall.SIGKILL}
	if fmt.Sprint(k.sig) != fmt.Sprint(want) || fmt.Sprint(k.pid) != "[4242 4242 4242]" {
		t.Fatalf("signals %v to %v, want %v to 4242", k.sig, k.pid, want)
	}
	if d := k.at[0].Sub(start); d < 300*time.Millisecond {
		t.Errorf("first SIGINT after %v; the ping at 120 ms should delay it to >= 320 ms", d)
	}
	for i := 1; i < 3; i++ {
		if d := k.at[i].Sub(k.at[i-1]); d < 100*time.Millisecond {
			t.Errorf("signal %d only %v after the previous one, want >= grace", i, d)
		}
	}
}

// TestHangBytes pins the notification to the kernel's notify header.
func TestHangBytes(t *testing.T) {
	want := []byte{0xbe, 0xba, 0xfe, 0xca, 2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0}
	if got := Hang().Encode(); !bytes.Equal(got, want) {
		t.Errorf("HANG datagram % x, want % x", got, want)
	}
	n, err := mconsole.DecodeNotify(Hang().Encode())
	if err != nil || n.Type != mconsole.NotifyHang || len(n.Data) != 0 {
		t.Errorf("decoded %+v %v", n, err)
	}
}

// listen binds a notify listener.
func listen(t *testing.T) (string, int) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 10})
	return path, fd
}

// TestMconsoleBinary: the built binary, with a short timeout from the
// environment and a silent stdin pipe, sends one 16-byte HANG datagram
// and exits 1. Debian's sends 24 bytes (shown, not required).
func TestMconsoleBinary(t *testing.T) {
	path, fd := listen(t)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	cmd := exec.Command(testutil.Bin(t, "uml_watchdog"), "-mconsole", path)
	cmd.Stdin = pr
	cmd.Env = append(os.Environ(), TimeoutEnv+"=0.3")
	start := time.Now()
	r := testutil.RunCmd(t, cmd, 20*time.Second)
	pr.Close()
	if r.Code != 1 || r.Stdout != "\x00" || r.Stderr != "" {
		t.Errorf("got %+v, want rc 1 and one NUL", r)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 5*time.Second {
		t.Errorf("took %v with a 0.3 s timeout", d)
	}
	buf := make([]byte, 100)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	if !bytes.Equal(buf[:n], Hang().Encode()) {
		t.Errorf("datagram % x, want % x", buf[:n], Hang().Encode())
	}
}

// TestEscalation runs the built binary in -pid mode against a child that
// counts SIGINTs: two SIGINTs about a second apart, then SIGKILL about a
// second later; the watchdog exits 1.
func TestEscalation(t *testing.T) {
	child := exec.Command(os.Args[0])
	child.Env = append(os.Environ(), "WATCHDOG_TEST_TARGET=1")
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill()
	lines := make(chan string, 10)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	if l := <-lines; l != "ready" {
		t.Fatalf("target said %q", l)
	}
	pr, pw, _ := os.Pipe()
	defer pw.Close()
	wd := exec.Command(testutil.Bin(t, "uml_watchdog"), "-pid", strconv.Itoa(child.Process.Pid))
	wd.Stdin = pr
	wd.Env = append(os.Environ(), TimeoutEnv+"=0.5")
	start := time.Now()
	wdDone := make(chan testutil.Result)
	go func() { wdDone <- testutil.RunCmd(t, wd, 30*time.Second) }()
	var got []string
	var at []time.Duration
	for l := range lines {
		got = append(got, l)
		at = append(at, time.Since(start))
	}
	werr := child.Wait()
	killedAt := time.Since(start)
	r := <-wdDone
	pr.Close()
	if strings.Join(got, ",") != "INT 1,INT 2" {
		t.Fatalf("target saw %q, want two SIGINTs", got)
	}
	if at[0] < 450*time.Millisecond || at[0] > 3*time.Second {
		t.Errorf("first SIGINT at %v, want about 0.5 s", at[0])
	}
	if d := at[1] - at[0]; d < 900*time.Millisecond || d > 3*time.Second {
		t.Errorf("second SIGINT %v after the first, want about 1 s", d)
	}
	if d := killedAt - at[1]; d < 800*time.Millisecond || d > 4*time.Second {
		t.Errorf("killed %v after the second SIGINT, want about 1 s", d)
	}
	var xe *exec.ExitError
	if !errors.As(werr, &xe) || xe.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("target ended with %v, want SIGKILL", werr)
	}
	if r.Code != 1 || r.Stdout != "\x00" {
		t.Errorf("watchdog %+v, want rc 1", r)
	}
}
