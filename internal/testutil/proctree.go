package testutil

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// ProcTree describes pid and every process beneath it, a thread a line:
// pid, tid, command, state, the kernel function it sleeps in and the
// system call it is in (/proc/<tid>/syscall: its number, or "running"),
// and the signals pending for the thread and its process when there are.
// A test prints it when a process it started hangs: a guest thread
// waiting for the engine shows there in the engine's notification
// (seccomp_do_user_notification), with the syscall's number.
func ProcTree(pid int) string {
	parent := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, ok := ppidOf(p); ok {
			parent[p] = pp
		}
	}
	var pids []int
	for p := range parent {
		for q := p; q > 1; q = parent[q] {
			if q == pid {
				pids = append(pids, p)
				break
			}
		}
	}
	sort.Ints(pids)
	var b strings.Builder
	for _, p := range pids {
		tids, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", p))
		for _, t := range tids {
			dir := fmt.Sprintf("/proc/%d/task/%s/", p, t.Name())
			fmt.Fprintf(&b, "%d %s %s %s %s %s%s\n", p, t.Name(), procField(dir+"comm"), procState(dir+"stat"),
				procField(dir+"wchan"), firstWord(procField(dir+"syscall")), pending(dir+"status"))
		}
	}
	return b.String()
}

// ProcReport is ProcTree(pid) under a header naming its columns.
func ProcReport(pid int) string {
	return "processes (pid tid comm state wchan syscall):\n" + ProcTree(pid)
}

// Quit asks a hung process where it is stuck: it returns the process
// tree beneath it (ProcReport) and sends it SIGQUIT, which makes a Go
// program print every goroutine's stack on stderr. The caller kills it if
// it is still there a while later.
func Quit(p *os.Process) string {
	tree := ProcReport(p.Pid)
	p.Signal(syscall.SIGQUIT)
	return tree
}

// ppidOf reads a process's parent from /proc/<pid>/stat.
func ppidOf(pid int) (int, bool) {
	f := statFields(fmt.Sprintf("/proc/%d/stat", pid))
	if len(f) < 2 {
		return 0, false
	}
	pp, err := strconv.Atoi(f[1])
	return pp, err == nil
}

// procState is the state letter of a stat file.
func procState(path string) string {
	if f := statFields(path); len(f) > 0 {
		return f[0]
	}
	return "?"
}

// statFields splits a stat file after its "(comm)" field: state first.
func statFields(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

func procField(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "-"
	}
	if s := strings.TrimSpace(string(b)); s != "" {
		return s
	}
	return "-"
}

func firstWord(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return "-"
}

// pending reads the pending signal masks of a status file: "" when none.
func pending(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	out := ""
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":\t")
		if ok && (k == "SigPnd" || k == "ShdPnd") && strings.Trim(v, "0") != "" {
			out += " " + k + "=" + v
		}
	}
	return out
}
