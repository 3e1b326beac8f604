package sandbox

import (
	"fmt"

	"github.com/umltools/umltools/internal/abi"
)

// span is a run of consecutive syscall numbers [start, end) sharing a rule.
type span struct {
	start uint32
	rule  Rule
}

func stmt(code uint16, k uint32) abi.SockFilter { return abi.SockFilter{Code: code, K: k} }

func jmp(code uint16, k uint32, jt, jf uint8) abi.SockFilter {
	return abi.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
}

func ret(r Ret) abi.SockFilter { return stmt(abi.BPF_RET|abi.BPF_K, uint32(r)) }

// Compile turns the policy into a seccomp BPF program: a check that the
// syscall is native x86-64 (anything else, x32 included, kills the process),
// then a binary search over runs of syscall numbers ending in each run's
// rule. Negative numbers and numbers past the table get Default.
func (p *Policy) Compile() ([]abi.SockFilter, error) {
	if p.Default == RetAllow {
		return nil, fmt.Errorf("sandbox: a policy's default must not be ALLOW")
	}
	return p.compile()
}

// NotifyFilter compiles the second, stacked filter that sends the syscalls
// nrs to the engine's user-notification listener and allows the rest (the
// first filter still decides those). exec must stay traced.
func NotifyFilter(nrs []int) ([]abi.SockFilter, error) {
	p := &Policy{Rules: map[int]Rule{}, Default: RetAllow}
	for _, nr := range nrs {
		if nr == abi.SYS_EXECVE || nr == abi.SYS_EXECVEAT {
			return nil, fmt.Errorf("sandbox: exec (syscall %d) cannot go to user notification", nr)
		}
		p.Rules[nr] = Rule{Else: RetUserNotif}
	}
	return p.compile()
}

func (p *Policy) compile() ([]abi.SockFilter, error) {
	for nr, r := range p.Rules {
		if nr < 0 || nr >= abi.X32_SYSCALL_BIT {
			return nil, fmt.Errorf("sandbox: syscall number %d out of range", nr)
		}
		if r.Mask != 0 && (r.Arg < 0 || r.Arg > 5) {
			return nil, fmt.Errorf("sandbox: syscall %d: argument %d out of range", nr, r.Arg)
		}
	}
	// Runs of equal rules, from 0 to the first number past the table.
	def := Rule{Else: p.Default}
	var spans []span
	next := uint32(0)
	for _, nr := range p.sortedNrs() {
		if uint32(nr) > next {
			spans = appendSpan(spans, next, def)
		}
		spans = appendSpan(spans, uint32(nr), p.Rules[nr])
		next = uint32(nr) + 1
	}
	spans = appendSpan(spans, next, def)

	prog := []abi.SockFilter{
		stmt(abi.BPF_LD|abi.BPF_W|abi.BPF_ABS, abi.SeccompDataArch),
		jmp(abi.BPF_JMP|abi.BPF_JEQ|abi.BPF_K, abi.AUDIT_ARCH_X86_64, 1, 0),
		ret(RetKill),
		stmt(abi.BPF_LD|abi.BPF_W|abi.BPF_ABS, abi.SeccompDataNr),
		// Negative numbers (as unsigned, >= 2^31): the default.
		jmp(abi.BPF_JMP|abi.BPF_JGE|abi.BPF_K, 0x80000000, 0, 1),
		ret(p.Default),
		// The x32 ABI: refused outright.
		jmp(abi.BPF_JMP|abi.BPF_JSET|abi.BPF_K, abi.X32_SYSCALL_BIT, 0, 1),
		ret(RetKill),
	}
	prog = append(prog, p.tree(spans)...)
	if len(prog) > abi.BPF_MAXINSNS {
		return nil, fmt.Errorf("sandbox: filter has %d instructions, more than %d", len(prog), abi.BPF_MAXINSNS)
	}
	return prog, nil
}

func appendSpan(spans []span, start uint32, r Rule) []span {
	if n := len(spans); n > 0 && spans[n-1].rule == r {
		return spans
	}
	return append(spans, span{start, r})
}

// tree emits a binary search over spans, with the syscall number in A. The
// code is position independent (all jumps are relative and forward).
func (p *Policy) tree(spans []span) []abi.SockFilter {
	if len(spans) == 1 {
		return ruleCode(spans[0].rule)
	}
	mid := len(spans) / 2
	left, right := p.tree(spans[:mid]), p.tree(spans[mid:])
	var out []abi.SockFilter
	if len(left) <= 255 {
		out = append(out, jmp(abi.BPF_JMP|abi.BPF_JGE|abi.BPF_K, spans[mid].start, uint8(len(left)), 0))
	} else {
		// Too far for an 8-bit offset: hop over the left half with JA.
		out = append(out,
			jmp(abi.BPF_JMP|abi.BPF_JGE|abi.BPF_K, spans[mid].start, 0, 1),
			stmt(abi.BPF_JMP|abi.BPF_JA, uint32(len(left))))
	}
	out = append(out, left...)
	return append(out, right...)
}

// ruleCode emits a rule's verdict, testing its argument if it has one. It
// clobbers A, which is fine because every path ends in a RET.
func ruleCode(r Rule) []abi.SockFilter {
	if r.Mask == 0 {
		return []abi.SockFilter{ret(r.Else)}
	}
	var out []abi.SockFilter
	lo, hi := uint32(r.Mask), uint32(r.Mask>>32)
	off := uint32(abi.SeccompDataArgs + 8*r.Arg)
	// Each test jumps to the final "ret IfSet" when set. Count what lies
	// between each test and that instruction as we build from the end.
	type test struct {
		off, mask uint32
	}
	var tests []test
	if lo != 0 {
		tests = append(tests, test{off, lo})
	}
	if hi != 0 {
		tests = append(tests, test{off + 4, hi})
	}
	for i, tt := range tests {
		// After this JSET: the remaining tests (2 insns each), then
		// "ret Else", then "ret IfSet".
		rest := uint8(2*(len(tests)-1-i) + 1)
		out = append(out,
			stmt(abi.BPF_LD|abi.BPF_W|abi.BPF_ABS, tt.off),
			jmp(abi.BPF_JMP|abi.BPF_JSET|abi.BPF_K, tt.mask, rest, 0))
	}
	return append(out, ret(r.Else), ret(r.IfSet))
}
