package main

import (
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// caller is who ran uml_net: the real uid/gid. With a setuid-root binary
// the effective uid is 0; with CAP_NET_ADMIN as a file capability both
// are the caller's and the capability does the work.
type caller struct{ uid, gid int }

func currentCaller() caller { return caller{uid: unix.Getuid(), gid: unix.Getgid()} }

// dropPrivileges turns the process into the caller for good: real,
// effective and saved ids all become the caller's (which also empties the
// capability sets when the caller is not root), and any file capabilities
// are cleared. Go applies set*id and the capset below to every thread.
func dropPrivileges(c caller) error {
	if c.uid == 0 {
		return nil // root asked; there is nothing to give up
	}
	if err := syscall.Setresgid(c.gid, c.gid, c.gid); err != nil {
		return fmt.Errorf("setresgid %d: %w", c.gid, err)
	}
	if err := syscall.Setresuid(c.uid, c.uid, c.uid); err != nil {
		return fmt.Errorf("setresuid %d: %w", c.uid, err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		// AllThreadsSyscall is unavailable in cgo builds (the shipped
		// binary is static); there set*id went through libc to every
		// thread, which is enough unless file capabilities remain.
		if e != unix.ENOTSUP || hasCaps(true) {
			return fmt.Errorf("capset (clear): %w", e)
		}
	}
	if unix.Geteuid() != c.uid || hasCaps(false) {
		return fmt.Errorf("privileges still held after dropping them")
	}
	return nil
}

// keepOnlyNetAdmin turns the process into the caller but keeps
// CAP_NET_ADMIN, and nothing else, in its permitted and effective sets: what
// the ethertap relay needs to answer address changes, which arrive after
// the set-up. Netlink sockets opened earlier keep working.
func keepOnlyNetAdmin(c caller) error {
	if c.uid == 0 {
		return nil
	}
	prctl := func(v uintptr) error {
		if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, v, 0); e != 0 {
			return fmt.Errorf("prctl(PR_SET_KEEPCAPS): %w", e)
		}
		return nil
	}
	if err := prctl(1); err != nil {
		return err
	}
	if err := syscall.Setresgid(c.gid, c.gid, c.gid); err != nil {
		return fmt.Errorf("setresgid %d: %w", c.gid, err)
	}
	if err := syscall.Setresuid(c.uid, c.uid, c.uid); err != nil {
		return fmt.Errorf("setresuid %d: %w", c.uid, err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	data[0].Permitted = 1 << unix.CAP_NET_ADMIN
	data[0].Effective = 1 << unix.CAP_NET_ADMIN
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("capset (net_admin only): %w", e)
	}
	return prctl(0)
}

// hasCaps reports whether the calling thread holds any effective (or,
// with permitted, any permitted) capability.
func hasCaps(permitted bool) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return true
	}
	if permitted {
		return data[0].Permitted != 0 || data[1].Permitted != 0
	}
	return data[0].Effective != 0 || data[1].Effective != 0
}

// asCaller runs fn with the effective uid/gid of the caller (setuid mode),
// so files fn opens are checked against the caller's permissions. It is a
// no-op when the effective ids already are the caller's.
func asCaller(c caller, fn func() error) error {
	euid, egid := unix.Geteuid(), unix.Getegid()
	if euid == c.uid && egid == c.gid {
		return fn()
	}
	if err := syscall.Setresgid(-1, c.gid, -1); err != nil {
		return fmt.Errorf("setresgid: %w", err)
	}
	if err := syscall.Setresuid(-1, c.uid, -1); err != nil {
		syscall.Setresgid(-1, egid, -1)
		return fmt.Errorf("setresuid: %w", err)
	}
	ferr := fn()
	if err := syscall.Setresuid(-1, euid, -1); err != nil {
		return fmt.Errorf("restoring euid: %w", err)
	}
	if err := syscall.Setresgid(-1, egid, -1); err != nil {
		return fmt.Errorf("restoring egid: %w", err)
	}
	return ferr
}
