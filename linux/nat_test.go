package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

// The network issue's acceptance 5: the built-in user-mode NAT
// (eth0=slirp), with the engine run as an ordinary user (nobody, when
// the test runs as root). In a Debian guest: busybox udhcpc gets
// 10.0.2.15 (packet sockets), its script sets the address, the default
// route through 10.0.2.2 and the DNS server it was given; wget of
// http://10.0.2.2:<port>/ reaches a server on the host's loopback;
// nslookup asks the DNS proxy (10.0.2.3), which asks a DNS server this
// test runs on the host's loopback; and hostfwd=tcp:127.0.0.1:<port>-:8000
// makes the guest's `python3 -m http.server 8000` answer on the host.
func TestNetUserNAT(t *testing.T) {
	img := testutil.DebianImage(t)

	// The host's side: a web server, a DNS server, a free port to forward.
	blob := make([]byte, 1<<20)
	rand.Read(blob)
	sum := sha256.Sum256(blob)
	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer web.Close()
	go http.Serve(web, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(blob) }))
	dns, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	go serveTestDNS(dns, "nat-test.example", [4]byte{192, 0, 2, 7})
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fwdPort := free.Addr().(*net.TCPAddr).Port
	free.Close()

	dhcpScript := `#!/bin/sh
case "$1" in bound|renew)
	busybox ifconfig $interface $ip netmask $subnet up
	busybox route add default gw $router
	echo "nameserver $dns" > /etc/resolv.conf
	echo DHCP-IP $ip ROUTER $router DNS $dns ;;
esac
`
	guest := "mount -t proc proc /proc; busybox ip link set eth0 up; " +
		"printf '%s' '" + dhcpScript + "' > /tmp/dhcp.sh; chmod +x /tmp/dhcp.sh; " +
		"busybox udhcpc -i eth0 -n -q -t 5 -T 2 -s /tmp/dhcp.sh || echo UDHCPC-FAILED; " +
		fmt.Sprintf("busybox wget -q -O - http://10.0.2.2:%d/blob | sha256sum | sed 's/^/GOT /'; ", web.Addr().(*net.TCPAddr).Port) +
		"busybox nslookup nat-test.example | sed 's/^/NS /'; " +
		"mkdir /tmp/www; echo hello from the guest > /tmp/www/hello.txt; cd /tmp/www; " +
		"python3 -m http.server 8000 2>/tmp/http.log & " +
		"for i in $(seq 100); do grep -q 'GET /hello.txt' /tmp/http.log 2>/dev/null && break; sleep 0.3; done; " +
		"echo HTTP-SERVED; busybox poweroff -f"

	// An ordinary user's engine: its files where nobody can reach them.
	dir, err := os.MkdirTemp("", "umlnat")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o777)
	mine := filepath.Join(dir, "root.img")
	if err := os.Rename(img, mine); err != nil {
		testutil.CopySparse(t, img, mine)
	}
	cmd := exec.Command(testutil.Bin(t, "linux"), "uml_dir="+dir+"/", "ubd0="+mine, "con0=fd:0,fd:1", "con=null", "mem=256M",
		fmt.Sprintf("eth0=slirp,,hostfwd=tcp:127.0.0.1:%d-:8000,resolver=%s", fwdPort, dns.LocalAddr()),
		"init=/bin/sh", "--", "-c", guest)
	if os.Getuid() == 0 {
		os.Chown(mine, 65534, 65534)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		cmd.Env = append(os.Environ(), "HOME="+dir)
	}
	var out testutil.SyncBuffer
	var errb testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-done
	}()

	// The forward: the host asks the guest's python until it answers.
	var page string
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) && page == "" {
		time.Sleep(300 * time.Millisecond)
		if strings.Contains(out.String(), "HTTP-SERVED") {
			break
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/hello.txt", fwdPort))
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			page = string(b)
		}
	}
	select {
	case <-done:
		done <- nil
	case <-time.After(time.Minute):
		t.Errorf("the guest did not power off")
	}
	o := strings.ReplaceAll(out.String(), "\r", "")
	ctx := "\nguest output:\n" + o + "\nstderr:\n" + errb.String()
	if !strings.Contains(errb.String()+o, "SLIRP backend - built-in user-mode NAT 10.0.2.0/24") {
		t.Errorf("no NAT banner%s", ctx)
	}
	if !strings.Contains(o, "DHCP-IP 10.0.2.15 ROUTER 10.0.2.2 DNS 10.0.2.3") {
		t.Errorf("udhcpc did not get 10.0.2.15 with router 10.0.2.2 and DNS 10.0.2.3%s", ctx)
	}
	if field(o, "GOT") != hex.EncodeToString(sum[:]) {
		t.Errorf("wget through the gateway did not get the host's blob%s", ctx)
	}
	if !strings.Contains(o, "NS Address: 192.0.2.7") && !strings.Contains(o, "NS Address 1: 192.0.2.7") {
		t.Errorf("nslookup did not get the test's answer%s", ctx)
	}
	if page != "hello from the guest\n" {
		t.Errorf("the forward from the host got %q from the guest's http.server%s", page, ctx)
	}
}

// serveTestDNS answers A questions for name with addr, NXDOMAIN for
// other names and an empty answer for other types of name, until c
// closes.
func serveTestDNS(c *net.UDPConn, name string, addr [4]byte) {
	b := make([]byte, 512)
	for {
		k, from, err := c.ReadFromUDP(b)
		if err != nil {
			return
		}
		q := b[:k]
		if len(q) < 12 {
			continue
		}
		// The question: labels, then type and class.
		i, labels := 12, []string{}
		for i < len(q) && q[i] != 0 && i+1+int(q[i]) <= len(q) {
			labels = append(labels, string(q[i+1:i+1+int(q[i])]))
			i += 1 + int(q[i])
		}
		i++
		if i+4 > len(q) {
			continue
		}
		qtype := binary.BigEndian.Uint16(q[i:])
		question := q[12 : i+4]
		r := append([]byte(nil), q[:2]...)
		rcode, an := 0, 0
		match := strings.EqualFold(strings.Join(labels, "."), name)
		switch {
		case !match:
			rcode = 3
		case qtype == 1:
			an = 1
		}
		r = append(r, 0x81, byte(0x80|rcode), 0, 1, 0, byte(an), 0, 0, 0, 0)
		r = append(r, question...)
		if an == 1 {
			r = append(r, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4)
			r = append(r, addr[:]...)
		}
		c.WriteToUDP(r, from)
	}
}
