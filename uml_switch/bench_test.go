package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/switchd"
	"github.com/umltools/umltools/internal/testutil"
)

type blastResult struct {
	frames, bytes uint64
	secs          float64
}

func (r blastResult) fps() float64  { return float64(r.frames) / r.secs }
func (r blastResult) mbps() float64 { return float64(r.bytes) * 8 / 1e6 / r.secs }

// blast connects a sender and a sink to the switch at ctl, lets the
// switch learn both, then sends size-byte unicast frames from the sender
// to the sink for d and counts what the sink receives.
func blast(t *testing.T, ctl string, size int, d time.Duration) blastResult {
	t.Helper()
	src, err := switchd.Dial(ctl)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := switchd.Dial(ctl)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	srcMAC := [6]byte{0x02, 0, 0, 0, 0xbe, 1}
	dstMAC := [6]byte{0x02, 0, 0, 0, 0xbe, 2}
	mk := func(to, from [6]byte, n int) []byte {
		f := make([]byte, n)
		copy(f, to[:])
		copy(f[6:], from[:])
		f[12], f[13] = 0x88, 0xb5 // local experimental ethertype
		return f
	}
	bc := [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	// Learning: each side announces itself with a broadcast.
	buf := make([]byte, 2048)
	for _, p := range []struct {
		from, to *switchd.Conn
		mac      [6]byte
	}{{dst, src, dstMAC}, {src, dst, srcMAC}} {
		p.from.WriteFrame(mk(bc, p.mac, 60))
		p.to.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := p.to.ReadFrame(buf); err != nil {
			t.Fatalf("learning frame did not arrive: %v", err)
		}
	}
	var frames, bytes atomic.Uint64
	start := time.Now()
	end := start.Add(d)
	sinkDone := make(chan struct{})
	go func() {
		defer close(sinkDone)
		bufs := make([][]byte, 64)
		for i := range bufs {
			bufs[i] = make([]byte, 2048)
		}
		lens := make([]int, 64)
		// Frames still queued in the switch count if they arrive promptly.
		dst.SetReadDeadline(end.Add(50 * time.Millisecond))
		for {
			n, err := dst.ReadFrames(bufs, lens)
			for i := 0; i < n; i++ {
				frames.Add(1)
				bytes.Add(uint64(lens[i]))
			}
			if err != nil {
				return
			}
		}
	}()
	f := mk(dstMAC, srcMAC, size)
	vec := make([][]byte, 64)
	for i := range vec {
		vec[i] = f
	}
	src.SetWriteDeadline(end)
	for time.Now().Before(end) {
		if _, err := src.WriteFrames(vec); err != nil {
			break
		}
	}
	<-sinkDone
	return blastResult{frames: frames.Load(), bytes: bytes.Load(), secs: time.Since(start).Seconds()}
}

// cpuSeconds is the user+system time a process has used so far.
func cpuSeconds(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// TestBenchSwitch is acceptance 5: frames/s and Mbit/s from one synthetic
// client to another through our switch and the C switch in the same run,
// and the frames forwarded per CPU-second the switch process used.
func TestBenchSwitch(t *testing.T) {
	testutil.NeedBench(t)
	impls := []struct{ name, bin string }{{"ours", testutil.Bin(t, "uml_switch")}, {"C", cSwitch(t)}}
	for _, size := range []int{1500, 64} {
		res := map[string]blastResult{}
		eff := map[string]float64{}
		// Alternate the two switches so that load from elsewhere on the
		// machine hits both alike.
		for round := 0; round < 3; round++ {
			for _, im := range impls {
				ctl := filepath.Join(t.TempDir(), "ctl")
				sp := startSwitchBin(t, im.bin, ctl, "-unix", ctl)
				pid := sp.cmd.Process.Pid
				blast(t, ctl, size, 200*time.Millisecond) // warm-up
				c0 := cpuSeconds(t, pid)
				r := blast(t, ctl, size, time.Second)
				used := cpuSeconds(t, pid) - c0
				acc := res[im.name]
				acc.frames += r.frames
				acc.bytes += r.bytes
				acc.secs += r.secs
				res[im.name] = acc
				eff[im.name] += used
			}
		}
		o, c := res["ours"], res["C"]
		if o.frames == 0 || c.frames == 0 {
			t.Fatalf("no frames went through: %+v", res)
		}
		oe, ce := float64(o.frames)/eff["ours"], float64(c.frames)/eff["C"]
		t.Logf("BENCH: uml_switch %d-byte frames: ours %.0f frames/s %.0f Mbit/s, C %.0f frames/s %.0f Mbit/s, ratio %.2fx; per switch CPU-second: ours %.0f frames, C %.0f frames, ratio %.2fx",
			size, o.fps(), o.mbps(), c.fps(), c.mbps(), o.fps()/c.fps(), oe, ce, oe/ce)
	}
}
