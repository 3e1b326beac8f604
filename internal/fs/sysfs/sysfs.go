// Package sysfs is the engine's /sys: the part of Linux's sysfs that
// tools read to learn the machine's block devices (lsblk, findmnt,
// blkid, udev-less scripts) and network interfaces (/sys/class/net). Each disk is a directory under
// /sys/devices/virtual/block with dev, size, ro, removable, range, stat,
// uevent and queue/, reached by the links /sys/block/<name>,
// /sys/class/block/<name> and /sys/dev/block/<major>:<minor>, as Linux
// lays them out. Everything is read-only and made from the Source at each
// lookup.
package sysfs

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/umltools/umltools/internal/fs/memfd"
	"github.com/umltools/umltools/internal/vfs"
)

// Magic is SYSFS_MAGIC.
const Magic = 0x62656572

// Disk is one block device of the machine.
type Disk struct {
	Name         string // "ubda"
	Major, Minor uint32
	Sectors      uint64 // size in 512-byte sectors
	ReadOnly     bool
}

// NetIface is one network interface of the machine.
type NetIface struct {
	Name     string // "eth0"
	Index    int
	MAC      []byte // nil for the loopback
	MTU      int
	Up       bool
	Loopback bool
	// Flags are the interface's IFF_* flags, as SIOCGIFFLAGS reports.
	Flags int
	// The counters of statistics/.
	RxBytes, RxPackets, TxBytes, TxPackets uint64
}

// Source lists the machine's disks and network interfaces.
type Source interface {
	Disks() []Disk
	NetIfaces() []NetIface
}

// FS is a sysfs instance.
type FS struct {
	src  Source
	boot time.Time
}

// New returns a sysfs over src.
func New(src Source) *FS { return &FS{src: src, boot: time.Now()} }

// Root returns /sys.
func (f *FS) Root() vfs.DirNode { return &dir{f: f, path: ""} }

// Type returns "sysfs".
func (f *FS) Type() string { return "sysfs" }

// Dynamic is true: disks come and go (hot-plug).
func (f *FS) Dynamic() bool { return true }

// Statfs reports sysfs's numbers.
func (f *FS) Statfs() vfs.Statfs { return vfs.Statfs{Type: Magic, Bsize: 4096, NameLen: 255} }

// entry is one node of the tree: a directory (children), a link
// (target) or a file (content).
type entry struct {
	children map[string]bool // names, for a directory
	target   string          // for a link
	content  string          // for a file
	kind     uint32          // S_IFDIR, S_IFLNK or S_IFREG
}

// tree builds the whole tree, by path below /sys ("" is the root).
func (f *FS) tree() map[string]*entry {
	t := map[string]*entry{}
	var mkdir func(p string)
	mkdir = func(p string) {
		if _, ok := t[p]; ok {
			return
		}
		t[p] = &entry{kind: syscall.S_IFDIR, children: map[string]bool{}}
		if p == "" {
			return
		}
		parent, name := split(p)
		mkdir(parent)
		t[parent].children[name] = true
	}
	add := func(p string, e *entry) {
		parent, name := split(p)
		mkdir(parent)
		t[p] = e
		t[parent].children[name] = true
	}
	for _, d := range []string{"block", "class/block", "class/net", "dev/block", "dev/char", "devices/virtual", "fs", "kernel", "module", "firmware", "bus"} {
		mkdir(d)
	}
	disks := f.src.Disks()
	sort.Slice(disks, func(i, j int) bool { return disks[i].Name < disks[j].Name })
	for _, d := range disks {
		base := "devices/virtual/block/" + d.Name
		ro := "0"
		if d.ReadOnly {
			ro = "1"
		}
		file := func(name, s string) { add(base+"/"+name, &entry{kind: syscall.S_IFREG, content: s + "\n"}) }
		file("dev", fmt.Sprintf("%d:%d", d.Major, d.Minor))
		file("size", fmt.Sprint(d.Sectors))
		file("ro", ro)
		file("removable", "0")
		file("range", "16")
		file("ext_range", "16")
		file("capability", "0")
		file("stat", strings.TrimSuffix(strings.Repeat("       0 ", 17), " "))
		file("uevent", fmt.Sprintf("MAJOR=%d\nMINOR=%d\nDEVNAME=%s\nDEVTYPE=disk", d.Major, d.Minor, d.Name))
		for name, v := range map[string]string{"logical_block_size": "512", "physical_block_size": "512",
			"hw_sector_size": "512", "minimum_io_size": "512", "optimal_io_size": "0", "rotational": "0",
			"discard_granularity": "0", "read_ahead_kb": "128", "nr_requests": "64", "scheduler": "[none]"} {
			file("queue/"+name, v)
		}
		mkdir(base + "/holders")
		mkdir(base + "/slaves")
		add("block/"+d.Name, &entry{kind: syscall.S_IFLNK, target: "../devices/virtual/block/" + d.Name})
		add("class/block/"+d.Name, &entry{kind: syscall.S_IFLNK, target: "../../devices/virtual/block/" + d.Name})
		add(fmt.Sprintf("dev/block/%d:%d", d.Major, d.Minor), &entry{kind: syscall.S_IFLNK, target: "../../devices/virtual/block/" + d.Name})
	}
	for _, n := range f.src.NetIfaces() {
		base := "devices/virtual/net/" + n.Name
		file := func(name, s string) { add(base+"/"+name, &entry{kind: syscall.S_IFREG, content: s + "\n"}) }
		mac, bcast, typ, oper, carrier := "00:00:00:00:00:00", "00:00:00:00:00:00", "772", "unknown", "1"
		if !n.Loopback {
			mac = fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", n.MAC[0], n.MAC[1], n.MAC[2], n.MAC[3], n.MAC[4], n.MAC[5])
			bcast, typ, oper = "ff:ff:ff:ff:ff:ff", "1", "down"
			if n.Up {
				oper = "up"
			}
		}
		file("address", mac)
		file("broadcast", bcast)
		file("addr_len", "6")
		file("type", typ)
		file("ifindex", fmt.Sprint(n.Index))
		file("iflink", fmt.Sprint(n.Index))
		file("mtu", fmt.Sprint(n.MTU))
		file("flags", fmt.Sprintf("%#x", n.Flags))
		file("operstate", oper)
		file("tx_queue_len", "1000")
		file("dev_id", "0x0")
		file("uevent", fmt.Sprintf("INTERFACE=%s\nIFINDEX=%d", n.Name, n.Index))
		if n.Up {
			file("carrier", carrier) // reading it on a down device is EINVAL in Linux
		}
		for name, v := range map[string]uint64{"rx_bytes": n.RxBytes, "rx_packets": n.RxPackets, "tx_bytes": n.TxBytes, "tx_packets": n.TxPackets,
			"rx_errors": 0, "tx_errors": 0, "rx_dropped": 0, "tx_dropped": 0, "multicast": 0, "collisions": 0} {
			file("statistics/"+name, fmt.Sprint(v))
		}
		add("class/net/"+n.Name, &entry{kind: syscall.S_IFLNK, target: "../../devices/virtual/net/" + n.Name})
	}
	return t
}

func split(p string) (parent, name string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// ino numbers nodes by a hash of their path (stable across lookups).
func ino(p string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(p); i++ {
		h = (h ^ uint64(p[i])) * 1099511628211
	}
	return h>>1 | 1
}

func (f *FS) attr(p string, mode uint32) vfs.Attr {
	n := uint32(1)
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		n = 2
	}
	return vfs.Attr{Ino: ino(p), Mode: mode, Nlink: n, Blksize: 4096, Atime: f.boot, Mtime: f.boot, Ctime: f.boot}
}

// node makes the vfs node of path p from its entry.
func (f *FS) node(p string, e *entry) vfs.Node {
	switch e.kind {
	case syscall.S_IFDIR:
		return &dir{f: f, path: p}
	case syscall.S_IFLNK:
		return &link{f: f, path: p, target: e.target}
	}
	return &file{f: f, path: p, content: e.content}
}

type dir struct {
	f    *FS
	path string
}

func (d *dir) Attr() (vfs.Attr, error) { return d.f.attr(d.path, syscall.S_IFDIR|0o555), nil }

func (d *dir) Lookup(c *vfs.Ctx, name string) (vfs.Node, error) {
	p := join(d.path, name)
	e, ok := d.f.tree()[p]
	if !ok {
		return nil, syscall.ENOENT
	}
	return d.f.node(p, e), nil
}

func (d *dir) ReadDir(c *vfs.Ctx) ([]vfs.Dirent, error) {
	t := d.f.tree()
	e, ok := t[d.path]
	if !ok {
		return nil, syscall.ENOENT
	}
	names := make([]string, 0, len(e.children))
	for n := range e.children {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]vfs.Dirent, 0, len(names))
	for _, n := range names {
		p := join(d.path, n)
		typ := uint8(syscall.DT_REG)
		switch t[p].kind {
		case syscall.S_IFDIR:
			typ = syscall.DT_DIR
		case syscall.S_IFLNK:
			typ = syscall.DT_LNK
		}
		out = append(out, vfs.Dirent{Name: n, Ino: ino(p), Type: typ})
	}
	return out, nil
}

type link struct {
	f            *FS
	path, target string
}

func (l *link) Attr() (vfs.Attr, error)           { return l.f.attr(l.path, syscall.S_IFLNK|0o777), nil }
func (l *link) Readlink(*vfs.Ctx) (string, error) { return l.target, nil }

type file struct {
	f             *FS
	path, content string
}

func (fl *file) Attr() (vfs.Attr, error) {
	a := fl.f.attr(fl.path, syscall.S_IFREG|0o444)
	a.Size = 4096 // as sysfs reports its attributes
	return a, nil
}

func (fl *file) Open(c *vfs.Ctx, flags int) (*os.File, error) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, syscall.EACCES
	}
	return memfd.FromBytes("sysfs:/sys/"+fl.path, []byte(fl.content))
}
