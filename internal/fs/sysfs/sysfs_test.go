package sysfs

import (
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"

	"github.com/umltools/umltools/internal/vfs"
)

type fakeSource []Disk

func (f fakeSource) Disks() []Disk { return f }

func (f fakeSource) NetIfaces() []NetIface {
	return []NetIface{
		{Name: "lo", Index: 1, MTU: 65536, Up: true, Loopback: true, Flags: 0x49},
		{Name: "eth0", Index: 2, MAC: []byte{2, 0, 0, 0, 0, 0x15}, MTU: 1500, Up: true, Flags: 0x1043, RxBytes: 1234},
		{Name: "vec0", Index: 3, MAC: []byte{2, 0, 0, 0, 0, 0x16}, MTU: 1400},
	}
}

// walk looks up a /sys path, following no links.
func walk(t *testing.T, fs *FS, p string) (vfs.Node, error) {
	t.Helper()
	var n vfs.Node = fs.Root()
	for _, name := range strings.Split(p, "/") {
		d, ok := n.(vfs.DirNode)
		if !ok {
			return nil, syscall.ENOTDIR
		}
		var err error
		if n, err = d.Lookup(nil, name); err != nil {
			return nil, err
		}
	}
	return n, nil
}

func TestTree(t *testing.T) {
	fs := New(fakeSource{{Name: "ubdb", Major: 98, Minor: 16, Sectors: 32768, ReadOnly: true}, {Name: "ubda", Major: 98, Minor: 0, Sectors: 100}})
	for _, tt := range []struct {
		path, content, link string
		err                 error
	}{
		{path: "block/ubda", link: "../devices/virtual/block/ubda"},
		{path: "dev/block/98:16", link: "../../devices/virtual/block/ubdb"},
		{path: "class/block/ubdb", link: "../../devices/virtual/block/ubdb"},
		{path: "devices/virtual/block/ubdb/size", content: "32768\n"},
		{path: "devices/virtual/block/ubdb/ro", content: "1\n"},
		{path: "devices/virtual/block/ubda/ro", content: "0\n"},
		{path: "devices/virtual/block/ubda/dev", content: "98:0\n"},
		{path: "devices/virtual/block/ubda/queue/logical_block_size", content: "512\n"},
		{path: "devices/virtual/block/ubdc", err: syscall.ENOENT},
		{path: "dev/block/98:32", err: syscall.ENOENT},
		{path: "devices/virtual/block/ubda/size/x", err: syscall.ENOTDIR},
		{path: "class/net/eth0", link: "../../devices/virtual/net/eth0"},
		{path: "devices/virtual/net/eth0/address", content: "02:00:00:00:00:15\n"},
		{path: "devices/virtual/net/eth0/operstate", content: "up\n"},
		{path: "devices/virtual/net/eth0/carrier", content: "1\n"},
		{path: "devices/virtual/net/eth0/flags", content: "0x1043\n"},
		{path: "devices/virtual/net/eth0/statistics/rx_bytes", content: "1234\n"},
		{path: "devices/virtual/net/vec0/operstate", content: "down\n"},
		{path: "devices/virtual/net/vec0/mtu", content: "1400\n"},
		{path: "devices/virtual/net/vec0/carrier", err: syscall.ENOENT},
		{path: "devices/virtual/net/lo/type", content: "772\n"},
		{path: "devices/virtual/net/lo/operstate", content: "unknown\n"},
		{path: "devices/virtual/net/eth0/ifindex", content: "2\n"},
	} {
		n, err := walk(t, fs, tt.path)
		if !errors.Is(err, tt.err) {
			t.Errorf("%s: %v, want %v", tt.path, err, tt.err)
			continue
		}
		switch {
		case err != nil:
		case tt.link != "":
			l, ok := n.(vfs.LinkNode)
			if !ok {
				t.Errorf("%s: not a link", tt.path)
				continue
			}
			if got, _ := l.Readlink(nil); got != tt.link {
				t.Errorf("%s -> %q, want %q", tt.path, got, tt.link)
			}
		default:
			f, err := n.(vfs.OpenNode).Open(nil, syscall.O_RDONLY)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(f)
			f.Close()
			if string(b) != tt.content {
				t.Errorf("%s: %q, want %q", tt.path, b, tt.content)
			}
			if _, err := n.(vfs.OpenNode).Open(nil, syscall.O_WRONLY); err == nil {
				t.Errorf("%s: opened for writing", tt.path)
			}
		}
	}
	ents, err := fs.Root().Lookup(nil, "block")
	if err != nil {
		t.Fatal(err)
	}
	list, _ := ents.(vfs.DirNode).ReadDir(nil)
	if len(list) != 2 || list[0].Name != "ubda" || list[1].Name != "ubdb" || list[0].Type != syscall.DT_LNK {
		t.Errorf("/sys/block: %v", list)
	}
}
