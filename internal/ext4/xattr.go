package ext4

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sort"
)

const xattrMagic = 0xEA020000

// Xattr is one extended attribute, with its full name ("user.foo").
type Xattr struct {
	Name  string
	Value []byte
}

var xattrPrefix = map[uint8]string{
	1: "user.", 2: "system.posix_acl_access", 3: "system.posix_acl_default",
	4: "trusted.", 6: "security.", 7: "system.", 8: "system.richacl",
}

// parseXattrEntries decodes the entry table at region[start:], whose value
// offsets count from valBase within region. where names the block for
// errors.
func parseXattrEntries(region []byte, start, valBase int, where uint64, ino uint32) ([]Xattr, error) {
	var out []Xattr
	pos := start
	for {
		if pos+4 > len(region) {
			return nil, corrupt(where, "inode %d: xattr entries run off the end", ino)
		}
		if le32(region, pos) == 0 {
			return out, nil
		}
		if pos+16 > len(region) {
			return nil, corrupt(where, "inode %d: xattr entry truncated", ino)
		}
		e := region[pos:]
		nameLen, idx := int(e[0]), e[1]
		voff, vinum, vsize := int(le16(e, 2)), le32(e, 4), int(le32(e, 8))
		if pos+16+nameLen > len(region) {
			return nil, corrupt(where, "inode %d: xattr name runs off the end", ino)
		}
		name := string(e[16 : 16+nameLen])
		if vinum != 0 {
			return nil, corrupt(where, "inode %d: xattr %q stored in an EA inode (ea_inode unsupported)", ino, name)
		}
		if valBase+voff+vsize > len(region) || vsize < 0 {
			return nil, corrupt(where, "inode %d: xattr %q value out of range", ino, name)
		}
		val := region[valBase+voff : valBase+voff+vsize]
		if p, ok := xattrPrefix[idx]; ok {
			full := p + name
			if idx == 2 || idx == 3 {
				full = p
				v, err := aclFromDisk(val)
				if err != nil {
					return nil, fmt.Errorf("inode %d: %s: %w", ino, full, err)
				}
				val = v
			} else {
				val = bytes.Clone(val)
			}
			out = append(out, Xattr{Name: full, Value: val})
		}
		pos += (16 + nameLen + 3) &^ 3
	}
}

// aclFromDisk converts ext4's compact POSIX ACL (version 1, short entries
// for the *_OBJ, MASK and OTHER tags) to the xattr format user space sees
// (version 2, 8-byte entries).
func aclFromDisk(b []byte) ([]byte, error) {
	if len(b) < 4 || le32(b, 0) != 1 {
		return nil, fmt.Errorf("bad ACL header")
	}
	out := binary.LittleEndian.AppendUint32(nil, 2)
	for p := 4; p < len(b); {
		if p+4 > len(b) {
			return nil, fmt.Errorf("truncated ACL entry")
		}
		tag, perm := le16(b, p), le16(b, p+2)
		id := uint32(0xFFFFFFFF)
		switch tag {
		case 1, 4, 0x10, 0x20:
			p += 4
		case 2, 8:
			if p+8 > len(b) {
				return nil, fmt.Errorf("truncated ACL entry")
			}
			id = le32(b, p+4)
			p += 8
		default:
			return nil, fmt.Errorf("bad ACL tag %#x", tag)
		}
		out = binary.LittleEndian.AppendUint16(out, tag)
		out = binary.LittleEndian.AppendUint16(out, perm)
		out = binary.LittleEndian.AppendUint32(out, id)
	}
	return out, nil
}

// ibodyXattrs are the attributes stored after i_extra_isize in the inode.
// Inline data's "system.data" is among them.
func (f *FS) ibodyXattrs(in *Inode) ([]Xattr, error) {
	if len(in.extra) < in.isize+4 {
		return nil, nil
	}
	region := in.extra[in.isize:]
	if le32(region, 0) != xattrMagic {
		return nil, nil
	}
	return parseXattrEntries(region, 4, 4, in.block, in.Ino)
}

func (f *FS) blockXattrs(in *Inode) ([]Xattr, error) {
	if in.FileACL == 0 {
		return nil, nil
	}
	b, err := f.block(in.FileACL)
	if err != nil {
		return nil, fmt.Errorf("inode %d xattr block: %w", in.Ino, err)
	}
	if le32(b, 0) != xattrMagic || le32(b, 8) != 1 {
		return nil, corrupt(in.FileACL, "inode %d: bad xattr block header", in.Ino)
	}
	if f.csum {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], in.FileACL)
		c := crc32c(f.csumSeed, n[:])
		c = crc32c(c, b[:0x10])
		c = crc32c(c, []byte{0, 0, 0, 0})
		c = crc32c(c, b[0x14:])
		if want := le32(b, 0x10); c != want {
			return nil, &ChecksumError{What: fmt.Sprintf("inode %d xattr block", in.Ino), Block: in.FileACL, Want: want, Got: c}
		}
	}
	return parseXattrEntries(b, 32, 0, in.FileACL, in.Ino)
}

// Xattrs returns every extended attribute of ino, sorted by name. Inline
// data ("system.data") is not listed, as the kernel hides it.
func (f *FS) Xattrs(ino uint32) ([]Xattr, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.xattrs(ino)
}

func (f *FS) xattrs(ino uint32) ([]Xattr, error) {
	in, err := f.inode(ino)
	if err != nil {
		return nil, err
	}
	a, err := f.ibodyXattrs(in)
	if err != nil {
		return nil, err
	}
	b, err := f.blockXattrs(in)
	if err != nil {
		return nil, err
	}
	out := make([]Xattr, 0, len(a)+len(b))
	for _, x := range append(a, b...) {
		if x.Name != "system.data" {
			out = append(out, x)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ListXattr returns the names of ino's extended attributes.
func (f *FS) ListXattr(ino uint32) ([]string, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	xs, err := f.xattrs(ino)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(xs))
	for i, x := range xs {
		names[i] = x.Name
	}
	return names, nil
}

// GetXattr returns the value of one extended attribute, or an error
// wrapping ErrNoData.
func (f *FS) GetXattr(ino uint32, name string) ([]byte, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	xs, err := f.xattrs(ino)
	if err != nil {
		return nil, err
	}
	for _, x := range xs {
		if x.Name == name {
			return x.Value, nil
		}
	}
	return nil, fmt.Errorf("inode %d: xattr %q: %w", ino, name, ErrNoData)
}

// inlineData returns the whole inline content of an inline_data inode:
// i_block followed by the "system.data" attribute, cut to i_size.
func (f *FS) inlineData(in *Inode) ([]byte, error) {
	xs, err := f.ibodyXattrs(in)
	if err != nil {
		return nil, err
	}
	data := append([]byte{}, in.iblock[:]...)
	for _, x := range xs {
		if x.Name == "system.data" {
			data = append(data, x.Value...)
		}
	}
	if uint64(len(data)) > in.Size && !in.IsDir() {
		data = data[:in.Size]
	}
	return data, nil
}
