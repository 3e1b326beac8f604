package extfs

import (
	"sync"
	"syscall"

	"github.com/umltools/umltools/internal/ext4"
)

// Readahead: a program that reads a directory's files one after the
// other in directory order (tar c, cp -r, find | xargs cat) gets the
// next ones filled on another goroutine while it reads the current one,
// as Linux reads ahead within a file. Filling a page (a memfd, a copy of
// the data) is most of the cost of a first open; done ahead, it runs on
// a CPU the reader leaves idle.
//
// It starts only on a sequential scan: two opens in a row of neighbouring
// files of one directory, while nothing is being written (the
// filesystem's generation did not move between them). Pages filled ahead
// are dropped if anything changed meanwhile, and never push the cache
// over its bounds.
const (
	raFiles = 32      // files ahead of the one opened
	raBytes = 8 << 20 // at most so many bytes in one go
	raNear  = 4       // "neighbouring": at most so many entries apart
)

// readahead is an FS's readahead state.
type readahead struct {
	mu      sync.Mutex
	lastDir uint32 // the directory and name of the last open seen
	last    string
	lastGen uint64

	dir   uint32          // the directory listed in ents
	gen   uint64          // the generation it was listed at
	ents  []ext4.DirEntry // its regular files, in directory order
	index map[string]int  // name → position in ents
	busy  bool            // a fill goroutine runs
}

// Readahead is told that regular file name of d was just opened for
// reading.
func (d *dir) Readahead(name string) {
	f := d.fs
	if f.stop == nil {
		return // New: no goroutines
	}
	ra := &f.ra
	g := f.gen.Load()
	ra.mu.Lock()
	prevDir, prev, prevGen := ra.lastDir, ra.last, ra.lastGen
	ra.lastDir, ra.last, ra.lastGen = d.ino, name, g
	if ra.busy || prevDir != d.ino || prevGen != g || prev == name {
		ra.mu.Unlock()
		return
	}
	if ra.dir != d.ino || ra.gen != g {
		if !ra.list(f, d.ino, g) {
			ra.mu.Unlock()
			return
		}
	}
	i, ok := ra.index[name]
	j, okp := ra.index[prev]
	if !ok || !okp || i <= j || i-j > raNear {
		ra.mu.Unlock()
		return
	}
	var todo []uint32
	for _, e := range ra.ents[i+1 : min(i+1+raFiles, len(ra.ents))] {
		if f.cached(e.Ino) == nil {
			todo = append(todo, e.Ino)
		}
	}
	if len(todo) == 0 {
		ra.mu.Unlock()
		return
	}
	ra.busy = true
	ra.mu.Unlock()
	f.mu.Lock() // Close sets closed under f.mu, then waits for f.done
	if f.closed {
		f.mu.Unlock()
		ra.mu.Lock()
		ra.busy = false
		ra.mu.Unlock()
		return
	}
	f.done.Add(1)
	f.mu.Unlock()
	go f.fillAhead(todo, g)
}

// list reads directory dir's regular files (ra.mu held).
func (ra *readahead) list(f *FS, dir uint32, g uint64) bool {
	var ents []ext4.DirEntry
	err := f.fs().ReadDir(dir, 0, func(e ext4.DirEntry) bool {
		if e.Type == syscall.DT_REG {
			ents = append(ents, e)
		}
		return true
	})
	if err != nil {
		return false
	}
	ra.dir, ra.gen, ra.ents = dir, g, ents
	ra.index = make(map[string]int, len(ents))
	for i, e := range ents {
		ra.index[e.Name] = i
	}
	return true
}

// fillAhead fills the pages of inos while the filesystem stays at
// generation g and the cache within its bounds.
func (f *FS) fillAhead(inos []uint32, g uint64) {
	defer f.done.Done()
	defer func() {
		f.ra.mu.Lock()
		f.ra.busy = false
		f.ra.mu.Unlock()
	}()
	budget := int64(raBytes)
	for _, ino := range inos {
		select {
		case <-f.stop:
			return
		default:
		}
		if budget <= 0 || f.gen.Load() != g || f.overBound() {
			return
		}
		n, err := f.fillPage(ino, g)
		if err != nil {
			return
		}

		budget -= n
	}
}

// fillPage fills ino's page ahead and returns its size, or 0 when it was
// not needed or went stale: the inode is checked again, under the
// cache's lock, to be the one the page was filled from (an unlink, or
// an inode freed and reused, while it was filled).
func (f *FS) fillPage(ino uint32, g uint64) (int64, error) {
	if f.cached(ino) != nil {
		return 0, nil
	}
	if in, err := f.fs().Inode(ino); err != nil || in.Size > raBytes {
		return 0, err // a big file is read when it is opened, not ahead
	}
	np, in, err := f.newPage(ino, false)
	if err != nil {
		return 0, err
	}
	same := func() bool {
		now, err := f.fs().Inode(ino)
		return err == nil && f.gen.Load() == g && now.Nlink > 0 && now.Generation == in.Generation &&
			now.Size == in.Size && now.Ctime.Equal(in.Ctime) && now.Mtime.Equal(in.Mtime)
	}
	if f.insert(np, same) != np {
		return 0, nil
	}
	return np.size, nil
}
