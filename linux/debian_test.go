package main

import (
	"embed"
	"fmt"
	"os"
	"os/exec"
	"path"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

// Engine milestone 2: unmodified Debian (glibc, dynamic) programs, on the
// image testutil.DebianImage builds with rootstrap.

// debianBoot runs a bash script as the guest's shell (init=/bin/bash,
// reading the script from the console) and returns its output.
func debianBoot(t *testing.T, img, script string, timeout time.Duration) run {
	t.Helper()
	r := boot(t, script+"\nexit 0\n", timeout, "ubd0="+img, "init=/bin/bash", "con0=fd:0,fd:1", "con=null", "quiet")
	if r.code != 0 {
		t.Fatalf("engine exited %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	return r
}

// quietShell makes an interactive bash print only what commands print.
const quietShell = "stty -echo; PS1= PS2=; bind 'set enable-bracketed-paste off' 2>/dev/null"

// marked returns the text printed after each "@@name" marker line, by name.
func marked(out string) map[string]string {
	res := map[string]string{}
	cur := ""
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimRight(l, "\r")
		l = strings.NewReplacer("\x1b[?2004h", "", "\x1b[?2004l", "").Replace(l)
		l = strings.TrimLeft(l, "\r")
		if name, ok := strings.CutPrefix(l, "@@"); ok && !strings.Contains(l, " ") {
			cur = name
			res[cur] = ""
			continue
		}
		if cur != "" && !strings.Contains(l, "@@") {
			res[cur] += l + "\n"
		}
	}
	return res
}

// mark is the shell line that prints a marker (quoted so the echoed
// input line never looks like one).
func mark(name string) string { return "echo '@''@" + name + "'" }

// Acceptance 1 and 2: listings, dpkg, apt, perl, python and the shell's
// signals on the Debian image.
func TestDebianShell(t *testing.T) {
	img := testutil.DebianImage(t)
	script := strings.Join([]string{
		quietShell,
		mark("ls"), "ls -la /usr/bin | wc -l",
		mark("dpkg"), "dpkg -l | grep -c ^ii",
		mark("apt"), "apt-cache policy bash",
		mark("perl"), `perl -e 'print "ok\n"'`,
		mark("python"), `python3 -c 'import json,hashlib,subprocess,threading;print(json.dumps({"a":1}))'`,
		mark("trap"), "trap 'echo got' USR1; kill -USR1 $$",
		mark("timeout"), "timeout 1 sleep 5; echo $?",
		mark("kill"), "sleep 10 & kill -TERM $!; wait $!; echo $?",
		mark("end"),
	}, "\n")
	r := debianBoot(t, img, script, 2*time.Minute)
	got := marked(r.stdout)

	// ls -la: one line per entry with . and .., plus "total".
	entries := 0
	for _, l := range lines(debugfs(t, img, "ls -l /usr/bin")) {
		if regexp.MustCompile(`^\d+\s+\d+\s+\(\d+\)`).MatchString(l) {
			entries++
		}
	}
	status := debugfs(t, img, "cat /var/lib/dpkg/status")
	installed, bashVer := 0, ""
	for _, para := range strings.Split(status, "\n\n") {
		if !strings.Contains(para, "\nStatus: install ok installed") {
			continue
		}
		installed++
		if strings.HasPrefix(para, "Package: bash\n") {
			if m := regexp.MustCompile(`\nVersion: (\S+)`).FindStringSubmatch(para); m != nil {
				bashVer = m[1]
			}
		}
	}
	want := map[string]string{
		"ls":      fmt.Sprintf("%d\n", entries+1),
		"dpkg":    fmt.Sprintf("%d\n", installed),
		"perl":    "ok\n",
		"python":  "{\"a\": 1}\n",
		"trap":    "got\n",
		"timeout": "124\n",
	}
	if entries < 100 || installed < 50 || bashVer == "" {
		t.Fatalf("the image looks wrong: %d entries in /usr/bin, %d packages, bash %q", entries, installed, bashVer)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got %q, want %q", k, got[k], w)
		}
	}
	if !strings.Contains(got["apt"], "Installed: "+bashVer+"\n") {
		t.Errorf("apt-cache policy bash: want Installed: %s, got\n%s", bashVer, got["apt"])
	}
	if l := lines(got["kill"]); len(l) == 0 || l[len(l)-1] != "143" {
		t.Errorf("sleep & kill -TERM; wait: got %q, want 143 last", got["kill"])
	}
	fsckClean(t, img)
}

// Acceptance 3: Python threads, 100 subprocesses, fork in a threaded
// program.
func TestDebianPython(t *testing.T) {
	img := testutil.DebianImage(t)
	py := `import threading, subprocess, os
out = []
def work(i): out.append(sum(range(20000 * (i + 1))))
ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
for th in ts: th.start()
for th in ts: th.join()
print("threads", len(out), sorted(out) == sorted(sum(range(20000 * (i + 1))) for i in range(8)))
print("subprocess", all(subprocess.run(["true"]).returncode == 0 for _ in range(100)))
ev = threading.Event()
bg = threading.Thread(target=ev.wait)
bg.start()
pid = os.fork()
if pid == 0:
    os._exit(7 if threading.active_count() == 1 else 9)
_, st = os.waitpid(pid, 0)
ev.set()
bg.join()
print("fork", os.WEXITSTATUS(st))
print("cpus", os.cpu_count() >= 1)`
	script := quietShell + "\n" + mark("py") + "\npython3 - <<'PY'\n" + py + "\nPY\n" + mark("end")
	r := debianBoot(t, img, script, 2*time.Minute)
	want := "threads 8 True\nsubprocess True\nfork 7\ncpus True\n"
	if got := marked(r.stdout)["py"]; got != want {
		t.Errorf("python: got %q, want %q\nstderr: %s", got, want, r.stderr)
	}
}

//go:embed testdata/m2/*.c
var m2Programs embed.FS

// Acceptance 4: static C programs for threads, robust mutexes, exec from
// a thread, per-thread signals, vfork/posix_spawn, SCM_RIGHTS and epoll
// print the same under the engine as natively.
func TestStaticPrograms(t *testing.T) {
	ents, err := m2Programs.ReadDir("testdata/m2")
	if err != nil {
		t.Fatal(err)
	}
	img := testutil.DefaultImage(t)
	files := map[string]string{}
	var names []string
	native := map[string]string{}
	for _, e := range ents {
		src, _ := m2Programs.ReadFile(path.Join("testdata/m2", e.Name()))
		name := "m2_" + strings.TrimSuffix(e.Name(), ".c")
		bin := testutil.StaticC(t, name, string(src))
		// Natively, from a directory named like the guest's, so argv[0]
		// is the same text.
		dir := t.TempDir()
		host := dir + "/" + name
		b, _ := os.ReadFile(bin)
		os.WriteFile(host, b, 0o755)
		out, err := exec.Command(host).CombinedOutput()
		if err != nil {
			t.Fatalf("%s natively: %v\n%s", name, err, out)
		}
		native[name] = string(out)
		files["/bin/"+name] = bin
		names = append(names, name)
	}
	sort.Strings(names)
	testutil.AddFiles(t, img, files)
	var script strings.Builder
	for _, n := range names {
		fmt.Fprintf(&script, "%s\n%s\n", mark(n), n)
	}
	script.WriteString(mark("end") + "\n")
	r := boot(t, "stty -echo; PS1=; mount -t proc proc /proc\n"+script.String()+"exit 0\n", time.Minute, "ubd0="+img, "init=/bin/sh", "con0=fd:0,fd:1", "con=null", "quiet")
	got := marked(r.stdout)
	for _, n := range names {
		if g := strings.TrimPrefix(got[n], "# "); g != native[n] {
			t.Errorf("%s: engine printed\n%s\nnatively\n%s", n, g, native[n])
		}
	}
	if t.Failed() {
		t.Logf("stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
}

// jobControl drives an interactive bash through a pty: sleep, ^Z, bg,
// jobs, fg, ^C. argv runs with the pty as its controlling terminal.
func jobControl(t *testing.T, argv ...string) {
	t.Helper()
	pty, err := testutil.OpenPty()
	if err != nil {
		testutil.Skip(t, "no host pty: %v", err)
	}
	defer pty.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "TERM=dumb", "PS1=P> ")
	if err := pty.Start(cmd); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	steps := []struct{ send, expect string }{
		{"", "P> "},
		{"sleep 100\n", ""},
		{"\x1a", "Stopped"},
		{"", "P> "},
		{"bg\n", "sleep 100 &"},
		{"jobs\n", "Running"},
		{"", "P> "},
		{"fg\n", "sleep 100"},
		{"\x03", "P> "},
		{"echo rc=$?\n", "rc=130"},
		{"exit\n", ""},
	}
	for _, s := range steps {
		if s.send != "" {
			if s.send == "\x1a" || s.send == "\x03" {
				time.Sleep(300 * time.Millisecond) // let the job start
			}
			pty.Write([]byte(s.send))
		}
		if s.expect != "" {
			if err := pty.Expect(s.expect, 20*time.Second); err != nil {
				t.Fatalf("after sending %q: %v", s.send, err)
			}
		}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not end after exit", argv[0])
	}
}

// Acceptance 5: job control through a host pty, as natively.
func TestJobControl(t *testing.T) {
	bash := testutil.NeedCmd(t, "bash")[0]
	t.Run("native", func(t *testing.T) { jobControl(t, bash, "--norc", "-i") })
	t.Run("engine", func(t *testing.T) {
		img := testutil.DebianImage(t)
		// bash gets the console as its controlling terminal the way a
		// getty would give it (setsid -c); init=/bin/bash alone has none,
		// on any kernel.
		jobControl(t, testutil.Bin(t, "linux"), "uml_dir="+t.TempDir()+"/", "ubd0="+img, "init=/bin/sh",
			"con0=fd:0,fd:1", "con=null", "quiet", "--", "-c", "export PS1='P> '; exec setsid -w -c bash --norc -i")
	})
}
