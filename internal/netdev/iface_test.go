package netdev

import (
	"net/netip"
	"testing"
	"time"
)

// ifconfig's sequence: an address (class mask), a netmask, up; then the
// interface and routing table say so, and the peer answers.
func TestIfconfigSequence(t *testing.T) {
	wa, wb := cable()
	_, _ = machine(t, wb, nil, "10.0.6.2/24")
	st, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Add("eth0", nil, wa); err != nil {
		t.Fatal(err)
	}
	if f, _ := st.Iface("eth0"); f.Up {
		t.Fatal("a new device is up")
	}
	if _, err := st.SetAddr4("eth0", netip.MustParsePrefix("10.0.6.1/8")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetAddr4("eth0", netip.MustParsePrefix("10.0.6.1/24")); err != nil {
		t.Fatal(err)
	}
	if err := st.SetUp("eth0", true); err != nil {
		t.Fatal(err)
	}
	f, _ := st.Iface("eth0")
	if !f.Up || len(f.Addrs) != 1 || f.Addrs[0] != netip.MustParsePrefix("10.0.6.1/24") {
		t.Errorf("eth0 %+v", f)
	}
	var got []string
	for _, r := range st.Routes() {
		got = append(got, r.Dst.String()+" "+r.Iface)
	}
	t.Logf("routes %v", got)
	if err := Ping(st, netip.MustParseAddr("10.0.6.2"), 3*time.Second); err != nil {
		t.Fatalf("ping: %v (routes %v)", err, got)
	}
}
