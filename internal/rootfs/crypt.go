package rootfs

import (
	"crypto/rand"
	"crypto/sha512"
	"fmt"
	"strings"
)

const cryptAlphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// SHA512Crypt hashes password the way glibc's crypt(3) does for "$6$"
// (SHA-crypt, 5000 rounds), so /etc/shadow accepts it. An empty salt picks
// a random 16-character one; a longer salt is cut to 16 characters.
func SHA512Crypt(password, salt string) (string, error) {
	if salt == "" {
		buf := make([]byte, 16)
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("salt: %w", err)
		}
		for i := range buf {
			buf[i] = cryptAlphabet[int(buf[i])%len(cryptAlphabet)]
		}
		salt = string(buf)
	}
	if len(salt) > 16 {
		salt = salt[:16]
	}
	if strings.ContainsAny(salt, "$:\n") {
		return "", fmt.Errorf("bad salt %q", salt)
	}
	return "$6$" + salt + "$" + sha512crypt([]byte(password), []byte(salt), 5000), nil
}

func sha512crypt(pw, salt []byte, rounds int) string {
	h := sha512.New()
	h.Write(pw)
	h.Write(salt)
	h.Write(pw)
	b := h.Sum(nil)

	h.Reset()
	h.Write(pw)
	h.Write(salt)
	n := len(pw)
	for ; n > 64; n -= 64 {
		h.Write(b)
	}
	h.Write(b[:n])
	for i := len(pw); i > 0; i >>= 1 {
		if i&1 != 0 {
			h.Write(b)
		} else {
			h.Write(pw)
		}
	}
	a := h.Sum(nil)

	h.Reset()
	for range pw {
		h.Write(pw)
	}
	dp := h.Sum(nil)
	p := make([]byte, 0, len(pw))
	for len(p)+64 <= len(pw) {
		p = append(p, dp...)
	}
	p = append(p, dp[:len(pw)-len(p)]...)

	h.Reset()
	for i := 0; i < 16+int(a[0]); i++ {
		h.Write(salt)
	}
	ds := h.Sum(nil)
	s := ds[:len(salt)]

	c := a
	for i := 0; i < rounds; i++ {
		h.Reset()
		if i&1 != 0 {
			h.Write(p)
		} else {
			h.Write(c)
		}
		if i%3 != 0 {
			h.Write(s)
		}
		if i%7 != 0 {
			h.Write(p)
		}
		if i&1 != 0 {
			h.Write(c)
		} else {
			h.Write(p)
		}
		c = h.Sum(nil)
	}

	order := [][3]int{
		{0, 21, 42}, {22, 43, 1}, {44, 2, 23}, {3, 24, 45}, {25, 46, 4}, {47, 5, 26}, {6, 27, 48},
		{28, 49, 7}, {50, 8, 29}, {9, 30, 51}, {31, 52, 10}, {53, 11, 32}, {12, 33, 54}, {34, 55, 13},
		{56, 14, 35}, {15, 36, 57}, {37, 58, 16}, {59, 17, 38}, {18, 39, 60}, {40, 61, 19}, {62, 20, 41},
	}
	var out strings.Builder
	enc := func(b2, b1, b0 byte, n int) {
		w := uint32(b2)<<16 | uint32(b1)<<8 | uint32(b0)
		for ; n > 0; n-- {
			out.WriteByte(cryptAlphabet[w&0x3f])
			w >>= 6
		}
	}
	for _, t := range order {
		enc(c[t[0]], c[t[1]], c[t[2]], 4)
	}
	enc(0, 0, c[63], 2)
	return out.String()
}
