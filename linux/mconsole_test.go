package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

// mconsoleInit is the init of the mconsole tests' guests: it runs what the
// test writes to the console, a line at a time, so the test can make the
// guest mount or unmount a disk between two commands.
const mconsoleInit = `#!/bin/sh
mount -t proc proc /proc 2>/dev/null
echo GUEST-UP
while read -r line; do eval "$line"; done
while :; do sleep 1; done
`

// mconsoleImage is a fresh default image with mconsoleInit as /mc.sh.
func mconsoleImage(t *testing.T) string {
	img := testutil.DefaultImage(t)
	script := filepath.Join(t.TempDir(), "mc.sh")
	os.WriteFile(script, []byte(mconsoleInit), 0o755)
	testutil.AddFiles(t, img, map[string]string{"/mc.sh": script})
	return img
}

// mcMachine is a kernel (ours or the C one) booted for an mconsole test,
// its console driven through a pipe.
type mcMachine struct {
	name   string
	cmd    *exec.Cmd
	in     io.WriteCloser
	socket string
	dir    string // the machine directory (<uml_dir><umid>)
	mu     sync.Mutex
	out    strings.Builder
	done   chan struct{}
}

// startMachine boots kern (a path to bin/linux or linux.uml) with img as
// ubd0 and mconsoleInit as init.
func startMachine(t *testing.T, name, kern, img string, extra ...string) *mcMachine {
	return startMachineFiles(t, name, kern, img, nil, extra...)
}

// startMachineFiles is startMachine with files as the kernel's fds 3, 4, …
func startMachineFiles(t *testing.T, name, kern, img string, files []*os.File, extra ...string) *mcMachine {
	t.Helper()
	dir := t.TempDir()
	umid := "mc" + name
	args := append([]string{"mem=64M", "ubd0=" + img, "rw", "init=/mc.sh", "con0=fd:0,fd:1", "con=null", "ssl=null",
		"umid=" + umid, "uml_dir=" + dir + "/"}, extra...)
	var cmd *exec.Cmd
	if strings.HasSuffix(kern, "linux.uml") {
		cmd = testutil.UMLCommand(kern, args...)
	} else {
		cmd = exec.Command(kern, args...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.ExtraFiles = files
	m := &mcMachine{name: name, cmd: cmd, socket: filepath.Join(dir, umid, "mconsole"), dir: filepath.Join(dir, umid), done: make(chan struct{})}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	m.in = in
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		r := bufio.NewReader(out)
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			m.mu.Lock()
			m.out.Write(buf[:n])
			m.mu.Unlock()
			if err != nil {
				break
			}
		}
		cmd.Wait()
		close(m.done)
	}()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-m.done
		if t.Failed() {
			t.Logf("%s output:\n%s", name, lastLines(m.output(), 40))
		}
	})
	return m
}

func (m *mcMachine) output() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return strings.ReplaceAll(m.out.String(), "\r", "")
}

// wait waits until the console output holds s n times.
func (m *mcMachine) wait(t *testing.T, s string, n int, timeout time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(timeout); strings.Count(m.output(), s) < n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %q (x%d) within %v", m.name, s, n, timeout)
		}
	}
}

// guest runs a shell line in the guest.
func (m *mcMachine) guest(line string) { io.WriteString(m.in, line+"\n") }

// mconsole runs a client (C or ours) against the machine: its stdout and
// exit code.
func (m *mcMachine) mconsole(t *testing.T, client string, words ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(client, append([]string{m.socket}, words...)...)
	res := testutil.RunCmd(t, cmd, 20*time.Second)
	return res.Stdout, res.Code
}

// transcriptStep is one command of the transcript, with what the guest
// does after it.
type transcriptStep struct {
	words []string
	after func(t *testing.T, m *mcMachine)
}

// cadReply is the C kernel's reply to cad (uml-interfaces.md §1.4,
// verified with Debian's uml_mconsole against linux.uml 6.1). The
// transcript does not send cad to the C kernel: the re-exec of its reboot
// has stalled under a loaded make test, spinning a CPU for minutes and
// starving the other tests' C kernels.
var cadReply = struct {
	out string
	rc  int
}{"OK \n", 0}

var (
	digits   = regexp.MustCompile(`[0-9]+`)
	spaces   = regexp.MustCompile(`[ \t]+`)
	versionR = regexp.MustCompile(`^OK Linux \S+ \S+ #\S+ .* x86_64\n$`)
)

// shape makes replies comparable between kernels: the machine's paths
// named, versions and numbers erased.
func shape(m *mcMachine, img, extra, cmd, out string) string {
	out = strings.ReplaceAll(out, extra, "EXTRA")
	out = strings.ReplaceAll(out, img, "IMG")
	switch {
	case cmd == "version":
		if versionR.MatchString(out) {
			return "OK Linux <node> <release> <version> x86_64\n"
		}
	case strings.HasPrefix(cmd, "proc"):
		out = spaces.ReplaceAllString(digits.ReplaceAllString(out, "N"), " ")
	}
	return out
}

// TestMconsoleTranscript is issue 11's acceptance 1 and 4: Debian's C
// uml_mconsole (and ours) against our engine and against the C kernel,
// the same commands on the same image: replies and exit codes equal,
// numbers and versions compared by shape.
func TestMconsoleTranscript(t *testing.T) {
	cclient := testutil.NeedCmd(t, "uml_mconsole")[0]
	ckern := testutil.NeedCmd(t, "linux.uml")[0]
	images := []struct {
		name string
		img  func(testing.TB) string
	}{{"busybox", testutil.DefaultImage}, {"debian", testutil.DebianImage}}
	for _, im := range images {
		t.Run(im.name, func(t *testing.T) {
			base := im.img(t)
			script := filepath.Join(t.TempDir(), "mc.sh")
			os.WriteFile(script, []byte(mconsoleInit), 0o755)
			testutil.AddFiles(t, base, map[string]string{"/mc.sh": script})
			tree := t.TempDir()
			os.WriteFile(filepath.Join(tree, "f"), []byte("hello-extra\n"), 0o644)
			extraBase := testutil.MkfsImage(t, tree, "8M", "-t", "ext4")
			type result struct {
				out string
				rc  int
			}
			run := func(name, kern, client string) (map[int]result, *mcMachine, string) {
				img := filepath.Join(t.TempDir(), name+".img")
				testutil.CopySparse(t, base, img)
				extra := filepath.Join(t.TempDir(), name+"-extra.img")
				testutil.CopySparse(t, extraBase, extra)
				m := startMachine(t, name, kern, img)
				m.wait(t, "GUEST-UP", 1, 90*time.Second)
				if name == "c" {
					testutil.SkipIfUnusableUML(t, m.output())
				}
				steps := []transcriptStep{
					{words: []string{"version"}}, {words: []string{"help"}},
					{words: []string{"proc", "meminfo"}}, {words: []string{"proc", "uptime"}},
					{words: []string{"proc", "no-such-file"}},
					{words: []string{"config", "con0"}}, {words: []string{"config", "ubd0"}},
					{words: []string{"config", "ubd1"}}, {words: []string{"config", "mem"}},
					{words: []string{"config", "eth0"}},
					{words: []string{"stop"}}, {words: []string{"stop"}}, {words: []string{"version"}}, {words: []string{"go"}},
					{words: []string{"go"}}, {words: []string{"log", "hello"}}, {words: []string{"frobnicate"}},
					{words: []string{"remove", "ubd9"}}, {words: []string{"remove", "eth0"}}, {words: []string{"remove", "mem"}},
					{words: []string{"stack", "0"}}, {words: []string{"stack"}},
					{words: []string{"config", "ubdb=" + extra}, after: func(t *testing.T, m *mcMachine) {
						m.guest("while [ ! -b /dev/ubdb ]; do sleep 0.1; done; mkdir -p /mnt; mount -t ext4 /dev/ubdb /mnt && cat /mnt/f")
						m.wait(t, "hello-extra", 1, 30*time.Second)
					}},
					{words: []string{"config", "ubdb=" + extra}}, {words: []string{"config", "ubd1"}},
					{words: []string{"remove", "ubdb"}, after: func(t *testing.T, m *mcMachine) {
						m.guest("umount /mnt && echo UN''MOUNTED")
						m.wait(t, "UNMOUNTED", 1, 30*time.Second)
					}},
					{words: []string{"remove", "ubdb"}}, {words: []string{"remove", "ubdb"}},
					{words: []string{"sysrq", "s"}},
					{words: []string{"cad"}, after: func(t *testing.T, m *mcMachine) {
						// Nothing disabled Ctrl-Alt-Del: the machine restarts.
						m.wait(t, "GUEST-UP", 2, 90*time.Second)
					}},
					{words: []string{"halt"}},
				}
				res := map[int]result{}
				for i, s := range steps {
					if name == "c" && s.words[0] == "cad" {
						res[i] = result{cadReply.out, cadReply.rc} // see cadReply
						continue
					}
					out, rc := m.mconsole(t, client, s.words...)
					res[i] = result{shape(m, img, extra, strings.Join(s.words, " "), out), rc}
					t.Logf("%s: %s -> rc %d %q", name, strings.Join(s.words, " "), rc, firstLine(res[i].out))
					if s.after != nil {
						s.after(t, m)
					}
				}
				select {
				case <-m.done:
				case <-time.After(60 * time.Second):
					t.Fatalf("%s: still running 60 s after halt", name)
				}
				if _, err := os.Stat(m.dir); err == nil {
					t.Errorf("%s: the machine directory %s is left after halt", name, m.dir)
				}
				return res, m, img
			}
			c, _, cimg := run("c", ckern, cclient)
			ours, om, oimg := run("ours", testutil.Bin(t, "linux"), cclient)
			oursOwn, _, oimg2 := run("own", testutil.Bin(t, "linux"), testutil.Bin(t, "uml_mconsole"))
			for i := 0; i < len(c); i++ {
				if ours[i] != c[i] {
					t.Errorf("step %d: C client vs our engine: %q rc %d; vs the C kernel: %q rc %d", i, ours[i].out, ours[i].rc, c[i].out, c[i].rc)
				}
				if oursOwn[i] != c[i] {
					t.Errorf("step %d: our client vs our engine: %q rc %d; C client vs the C kernel: %q rc %d", i, oursOwn[i].out, oursOwn[i].rc, c[i].out, c[i].rc)
				}
			}
			if code := om.cmd.ProcessState.ExitCode(); code != 0 {
				t.Errorf("our engine exited %d after halt", code)
			}
			if !strings.Contains(om.output(), "hello") {
				t.Errorf("mconsole log: hello is not in our kernel log")
			}
			for _, img := range []string{oimg, oimg2} {
				fsckClean(t, img)
			}
			fsckClean(t, cimg)
		})
	}
}

// TestMconsoleStop is acceptance 3: a guest counter makes no progress
// while the machine is stopped for 2 s, and goes on after go.
func TestMconsoleStop(t *testing.T) {
	img := mconsoleImage(t)
	m := startMachine(t, "stop", testutil.Bin(t, "linux"), img)
	m.wait(t, "GUEST-UP", 1, 60*time.Second)
	m.guest("i=0; while :; do i=$((i+1)); echo \"C$i\"; sleep 0.05; done &")
	count := func() int { return strings.Count(m.output(), "\nC") }
	m.wait(t, "\nC", 5, 20*time.Second)
	client := testutil.Bin(t, "uml_mconsole")
	if out, rc := m.mconsole(t, client, "stop"); rc != 0 || out != "OK stopped\n" {
		t.Fatalf("stop: %q rc %d", out, rc)
	}
	time.Sleep(200 * time.Millisecond) // what was in flight reaches the output
	before := count()
	// Other commands are served while stopped.
	if out, rc := m.mconsole(t, client, "proc", "uptime"); rc != 0 || !strings.HasPrefix(out, "OK \n") {
		t.Errorf("proc uptime while stopped: %q rc %d", out, rc)
	}
	time.Sleep(2 * time.Second)
	during := count() - before
	if out, rc := m.mconsole(t, client, "go"); rc != 0 {
		t.Fatalf("go: %q rc %d", out, rc)
	}
	time.Sleep(time.Second)
	after := count() - before - during
	t.Logf("counter lines: %d before stop, %d during 2 s stopped, %d in 1 s after go", before, during, after)
	if during != 0 {
		t.Errorf("the guest made progress while stopped: %d lines", during)
	}
	if after < 5 {
		t.Errorf("the guest did not resume: %d lines in 1 s", after)
	}
	// stack and sysrq t/m show the guest (one write each, so even the C
	// client, which loses packets beyond its queue, gets them whole).
	for _, c := range []struct {
		words []string
		want  []string
	}{
		{[]string{"stack", "1"}, []string{"OK Task 1 (", "RIP: 0033:", "RSP: 002b:", "Call Trace (frame pointers):"}},
		{[]string{"sysrq", "t"}, []string{"OK sysrq: Show State", "task:mc.sh", "pid:1 "}},
		{[]string{"sysrq", "m"}, []string{"OK sysrq: Show Memory", "Mem-Info:", "pages RAM"}},
	} {
		clients := []string{client}
		if cc, err := testutil.LookPath("uml_mconsole"); err == nil {
			clients = append(clients, cc)
		}
		for _, cl := range clients {
			out, rc := m.mconsole(t, cl, c.words...)
			for _, w := range c.want {
				if rc != 0 || !strings.Contains(out, w) {
					t.Errorf("%s %v: rc %d, no %q in %q", cl, c.words, rc, w, out)
				}
			}
		}
	}
	if out, rc := m.mconsole(t, client, "halt"); rc != 0 {
		t.Errorf("halt: %q rc %d", out, rc)
	}
	<-m.done
	fsckClean(t, img)
}

// TestMconsoleReboot is acceptance 2: reboot runs init again under the
// same umid (the socket keeps answering); halt leaves no machine
// directory, no guest process and a clean image.
func TestMconsoleReboot(t *testing.T) {
	img := mconsoleImage(t)
	m := startMachine(t, "reboot", testutil.Bin(t, "linux"), img)
	m.wait(t, "GUEST-UP", 1, 60*time.Second)
	client := testutil.Bin(t, "uml_mconsole")
	m.guest("echo written-before-reboot > /persist; sleep 1000 &")
	time.Sleep(300 * time.Millisecond)
	if out, rc := m.mconsole(t, client, "reboot"); rc != 0 || out != "OK \n" {
		t.Fatalf("reboot: %q rc %d", out, rc)
	}
	m.wait(t, "GUEST-UP", 2, 60*time.Second)
	if n := strings.Count(m.output(), "Run /mc.sh as init process"); n != 2 {
		t.Errorf("init ran %d times", n)
	}
	m.guest("cat /persist")
	m.wait(t, "\nwritten-before-reboot\n", 1, 10*time.Second)
	if out, rc := m.mconsole(t, client, "version"); rc != 0 || !strings.HasPrefix(out, "OK Linux") {
		t.Errorf("version after reboot: %q rc %d", out, rc)
	}
	pid := m.cmd.Process.Pid
	if out, rc := m.mconsole(t, client, "halt"); rc != 0 || out != "OK \n" {
		t.Fatalf("halt: %q rc %d", out, rc)
	}
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		t.Fatal("still running 30 s after halt")
	}
	if code := m.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit %d after halt", code)
	}
	if _, err := os.Stat(m.dir); err == nil {
		t.Errorf("machine directory %s left after halt", m.dir)
	}
	// No guest process is left: none has the engine as an ancestor.
	if left := descendants(pid); len(left) != 0 {
		t.Errorf("processes left after halt: %v", left)
	}
	fsckClean(t, img)
}

// descendants lists the live processes whose parent chain reaches pid.
func descendants(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	parent := map[int]int{}
	for _, e := range ents {
		var p int
		if _, err := fmt.Sscanf(e.Name(), "%d", &p); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		var pp int
		fmt.Sscanf(f[1], "%d", &pp)
		parent[p] = pp
	}
	var out []int
	for p := range parent {
		for q, n := parent[p], 0; q > 1 && n < 64; q, n = parent[q], n+1 {
			if q == pid {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// firstLine is s up to its first newline.
func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// TestMconsoleNotify checks mconsole=notify: (the socket, a guest's
// writes to /proc/mconsole, a panic) and ready-fd=: the line comes when
// init runs, and the machine directory is there, answering, by then.
func TestMconsoleNotify(t *testing.T) {
	img := mconsoleImage(t)
	npath := filepath.Join(t.TempDir(), "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: npath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	next := func(what string) (typ uint32, data string) {
		t.Helper()
		ln.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 1024)
		n, err := ln.Read(buf)
		if err != nil {
			t.Fatalf("waiting for the %s notification: %v", what, err)
		}
		if n < 16 || binary.LittleEndian.Uint32(buf) != 0xcafebabe || binary.LittleEndian.Uint32(buf[4:]) != 2 ||
			int(binary.LittleEndian.Uint32(buf[12:])) != n-16 {
			t.Fatalf("%s notification: bad datagram % x", what, buf[:n])
		}
		return binary.LittleEndian.Uint32(buf[8:]), string(buf[16:n])
	}
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	m := startMachineFiles(t, "notify", testutil.Bin(t, "linux"), img, []*os.File{wr}, "mconsole=notify:"+npath, "ready-fd=3")
	wr.Close()
	line, err := bufio.NewReader(rd).ReadString('\n')
	if err != nil {
		t.Fatalf("ready-fd: %v", err)
	}
	if want := "mcnotify " + m.socket + "\n"; line != want {
		t.Errorf("ready-fd line %q, want %q", line, want)
	}
	// The directory appeared only with a socket that answers.
	client := testutil.Bin(t, "uml_mconsole")
	if out, rc := m.mconsole(t, client, "version"); rc != 0 || !strings.HasPrefix(out, "OK Linux") {
		t.Errorf("version right after ready: %q rc %d", out, rc)
	}
	if typ, data := next("socket"); typ != 0 || data != m.socket+"\x00" {
		t.Errorf("first notification: type %d %q, want MCONSOLE_SOCKET %q", typ, data, m.socket+"\x00")
	}
	m.wait(t, "GUEST-UP", 1, 60*time.Second)
	m.guest("printf hello-user-notify > /proc/mconsole; ls -l /proc/mconsole")
	if typ, data := next("user"); typ != 3 || data != "hello-user-notify" {
		t.Errorf("user notification: type %d %q", typ, data)
	}
	m.wait(t, "--w-------", 1, 10*time.Second)
	if out, rc := m.mconsole(t, client, "sysrq", "c"); rc != 0 || out != "OK sysrq: Trigger a crash\n\n" {
		t.Errorf("sysrq c: %q rc %d", out, rc)
	}
	if typ, data := next("panic"); typ != 1 || data != "sysrq triggered crash\x00" {
		t.Errorf("panic notification: type %d %q", typ, data)
	}
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		t.Fatal("still running 30 s after the panic")
	}
	if code := m.cmd.ProcessState.ExitCode(); code == 0 {
		t.Errorf("exit 0 after a panic")
	}
	fsckClean(t, img)
}
