package machine

import "testing"

func TestHasFlag(t *testing.T) {
	for _, tc := range []struct {
		opts string
		want bool
	}{
		{"", false}, {"discard", true}, {"ro,discard", true}, {"discard,nodiscard", false},
		{"nodiscard,discard", true}, {"discards", false}, {"xdiscard", false},
	} {
		if got := hasFlag(tc.opts, "discard"); got != tc.want {
			t.Errorf("hasFlag(%q) = %v, want %v", tc.opts, got, tc.want)
		}
	}
}
