package abi

import (
	"testing"
	"unsafe"
)

// TestLayouts checks struct sizes against the kernel's x86-64 ABI.
func TestLayouts(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"user_regs_struct", unsafe.Sizeof(Regs{}), 27 * 8},
		{"orig_rax offset", unsafe.Offsetof(Regs{}.OrigRax), 15 * 8},
		{"rsp offset", unsafe.Offsetof(Regs{}.Rsp), 19 * 8},
		{"new_utsname", unsafe.Sizeof(Utsname{}), 6 * 65},
		{"stat", unsafe.Sizeof(Stat{}), 144},
		{"stat.st_size offset", unsafe.Offsetof(Stat{}.Size), 48},
		{"stat.st_mtime offset", unsafe.Offsetof(Stat{}.Mtime), 88},
		{"sock_filter", unsafe.Sizeof(SockFilter{}), 8},
		{"sock_fprog", unsafe.Sizeof(SockFprog{}), 16},
		{"dirent64 d_type", unsafe.Offsetof(Dirent64Header{}.Type), 18},
		{"statx", unsafe.Sizeof(Statx{}), 256},
		{"statx.stx_atime offset", unsafe.Offsetof(Statx{}.Atime), 64},
		{"statx.stx_rdev_major offset", unsafe.Offsetof(Statx{}.RdevMajor), 128},
		{"statx.stx_mnt_id offset", unsafe.Offsetof(Statx{}.MntID), 144},
		{"sysinfo", unsafe.Sizeof(Sysinfo{}), 112},
		{"sysinfo.procs offset", unsafe.Offsetof(Sysinfo{}.Procs), 80},
		{"sysinfo.mem_unit offset", unsafe.Offsetof(Sysinfo{}.Unit), 104},
		{"timespec", unsafe.Sizeof(Timespec{}), 16},
		{"seccomp_data", unsafe.Sizeof(SeccompData{}), SeccompDataSize},
		{"seccomp_notif", unsafe.Sizeof(SeccompNotif{}), 80},
		{"seccomp_notif_resp", unsafe.Sizeof(SeccompNotifResp{}), 24},
		{"seccomp_notif_addfd", unsafe.Sizeof(SeccompNotifAddfd{}), 24},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

// TestSyscallNumbers spot-checks the generated table.
func TestSyscallNumbers(t *testing.T) {
	for nr, name := range map[int]string{0: "read", 39: "getpid", 59: "execve", 110: "getppid", 231: "exit_group", 321: "bpf", 425: "io_uring_setup", 435: "clone3", 462: "mseal"} {
		if SyscallNames[nr] != name {
			t.Errorf("SyscallNames[%d] = %q, want %q", nr, SyscallNames[nr], name)
		}
	}
}
