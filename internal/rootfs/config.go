// Package rootfs is what rootstrap does: read the layered rootstrap.conf,
// obtain a root tree (a busybox profile, a Debian bootstrap, a tar or a
// directory), run the configured modules over it, and pack it into an ext2,
// ext3 or ext4 image without loop mounts and, where the host allows it,
// without root.
package rootfs

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// GlobalSection is the special section whose keys every module inherits.
const GlobalSection = "global"

// Config is a parsed rootstrap.conf, possibly merged from several layers.
// Section names are case-sensitive as in the original; key lookups through
// Get are case-insensitive, while Env keeps each key's spelling (so PATH
// stays PATH).
type Config struct {
	order    []string
	sections map[string]*Section
	// Files lists the files that were loaded, in order.
	Files []string
}

// Section is one [name] block: keys in first-seen order with their values.
type Section struct {
	Name string
	keys []string
	vals map[string]string
}

// Keys returns the section's keys in first-seen order.
func (s *Section) Keys() []string { return append([]string(nil), s.keys...) }

// Value returns the raw value of key (exact spelling, then any case).
func (s *Section) Value(key string) (string, bool) {
	if v, ok := s.vals[key]; ok {
		return v, true
	}
	for _, k := range s.keys {
		if strings.EqualFold(k, key) {
			return s.vals[k], true
		}
	}
	return "", false
}

func (s *Section) set(key, val string) {
	if _, ok := s.vals[key]; !ok {
		// A later layer spelling the key in another case replaces it.
		for i, k := range s.keys {
			if strings.EqualFold(k, key) {
				delete(s.vals, k)
				s.keys[i] = key
				s.vals[key] = val
				return
			}
		}
		s.keys = append(s.keys, key)
	}
	s.vals[key] = val
}

// NewConfig returns an empty configuration.
func NewConfig() *Config { return &Config{sections: map[string]*Section{}} }

// Section returns the named section, or nil.
func (c *Config) Section(name string) *Section { return c.sections[name] }

// Sections returns the section names in first-seen order.
func (c *Config) Sections() []string { return append([]string(nil), c.order...) }

func (c *Config) section(name string) *Section {
	s := c.sections[name]
	if s == nil {
		s = &Section{Name: name, vals: map[string]string{}}
		c.sections[name] = s
		c.order = append(c.order, name)
	}
	return s
}

// Set sets key in section (creating it), as a later layer would.
func (c *Config) Set(section, key, val string) { c.section(section).set(key, val) }

// Merge lays o over c: every key o sets replaces c's.
func (c *Config) Merge(o *Config) {
	for _, name := range o.order {
		s := o.sections[name]
		d := c.section(name)
		for _, k := range s.keys {
			d.set(k, s.vals[k])
		}
	}
	c.Files = append(c.Files, o.Files...)
}

// Get returns key from section, falling back to [global], with %(name)s
// references expanded the way the original's Python ConfigParser did.
func (c *Config) Get(section, key string) (string, bool) {
	raw, ok := c.raw(section, key)
	if !ok {
		return "", false
	}
	return c.expand(section, raw, 0), true
}

// GetDefault is Get with a default for a missing or empty key.
func (c *Config) GetDefault(section, key, def string) string {
	if v, ok := c.Get(section, key); ok && strings.TrimSpace(v) != "" {
		return v
	}
	return def
}

func (c *Config) raw(section, key string) (string, bool) {
	if s := c.sections[section]; s != nil {
		if v, ok := s.Value(key); ok {
			return v, true
		}
	}
	if s := c.sections[GlobalSection]; s != nil && section != GlobalSection {
		return s.Value(key)
	}
	return "", false
}

// expand replaces %(name)s with the value of name (same lookup rules) and
// %% with %. Unknown names and overly deep nesting are left as written.
func (c *Config) expand(section, v string, depth int) string {
	if !strings.Contains(v, "%") || depth > 10 {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			b.WriteByte(v[i])
			continue
		}
		if i+1 < len(v) && v[i+1] == '%' {
			b.WriteByte('%')
			i++
			continue
		}
		if i+1 < len(v) && v[i+1] == '(' {
			if end := strings.Index(v[i:], ")s"); end > 0 {
				name := v[i+2 : i+end]
				if r, ok := c.raw(section, name); ok && !strings.ContainsAny(name, "()") {
					b.WriteString(c.expand(section, r, depth+1))
					i += end + 1
					continue
				}
			}
		}
		b.WriteByte('%')
	}
	return b.String()
}

// Env returns the environment a module of the given section receives:
// every [global] key, overridden by the section's own keys, as KEY=value
// (values expanded, continuation newlines kept).
func (c *Config) Env(section string) []string {
	seen := map[string]int{}
	var env []string
	add := func(s *Section) {
		if s == nil {
			return
		}
		for _, k := range s.keys {
			kv := k + "=" + c.expand(section, s.vals[k], 0)
			if i, ok := seen[k]; ok {
				env[i] = kv
				continue
			}
			seen[k] = len(env)
			env = append(env, kv)
		}
	}
	add(c.sections[GlobalSection])
	if section != GlobalSection {
		add(c.sections[section])
	}
	return env
}

// List splits a value into words (spaces, commas, newlines), as used for
// modules= and include=.
func List(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool {
		return r == ' ' || r == '\t' || r == '\n' || r == ',' || r == '\r'
	})
}

// ParseError locates a syntax error in a configuration file.
type ParseError struct {
	File string
	Line int
	Msg  string
}

func (e *ParseError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

// Parse reads one configuration file. name is used in error messages.
//
// Syntax (that of the original's Python ConfigParser, slightly relaxed):
// "[section]" headers; "key=value" or "key: value" entries; lines starting
// with '#' or ';' are comments, and so is the rest of a line after
// whitespace followed by '#' or ';'; a line starting with whitespace
// continues the previous value (joined with a newline).
func Parse(r io.Reader, name string) (*Config, error) {
	c := NewConfig()
	c.Files = []string{name}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	var cur *Section
	lastKey := ""
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimRight(sc.Text(), " \t\r")
		if n == 1 {
			line = strings.TrimPrefix(line, "\ufeff")
		}
		trimmed := strings.TrimLeft(line, " \t")
		if trimmed == "" || trimmed[0] == '#' || trimmed[0] == ';' {
			if trimmed == "" {
				lastKey = ""
			}
			continue
		}
		if trimmed != line && lastKey != "" {
			v := stripComment(trimmed)
			if v != "" {
				old := cur.vals[lastKey]
				if old != "" {
					v = old + "\n" + v
				}
				cur.vals[lastKey] = v
			}
			continue
		}
		if trimmed != line {
			return nil, &ParseError{name, n, "continuation line without a preceding option"}
		}
		if line[0] == '[' {
			end := strings.IndexByte(line, ']')
			if end < 0 {
				return nil, &ParseError{name, n, "section header without ']'"}
			}
			sec := strings.TrimSpace(line[1:end])
			if sec == "" {
				return nil, &ParseError{name, n, "empty section name"}
			}
			if rest := stripComment(line[end+1:]); rest != "" {
				return nil, &ParseError{name, n, fmt.Sprintf("unexpected text after section header: %q", rest)}
			}
			cur = c.section(sec)
			lastKey = ""
			continue
		}
		i := strings.IndexAny(line, "=:")
		if i <= 0 {
			return nil, &ParseError{name, n, fmt.Sprintf("expected key=value, got %q", line)}
		}
		if cur == nil {
			return nil, &ParseError{name, n, "option before the first [section] header"}
		}
		key := strings.TrimSpace(line[:i])
		if key == "" || strings.ContainsAny(key, " \t[]") {
			return nil, &ParseError{name, n, fmt.Sprintf("bad option name %q", key)}
		}
		cur.set(key, stripComment(strings.TrimSpace(line[i+1:])))
		lastKey = key
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

// stripComment removes a trailing comment: '#' or ';' preceded by
// whitespace (or at the start).
func stripComment(s string) string {
	for i := 0; i < len(s); i++ {
		if (s[i] == '#' || s[i] == ';') && (i == 0 || s[i-1] == ' ' || s[i-1] == '\t') {
			return strings.TrimRight(s[:i], " \t")
		}
	}
	return strings.TrimSpace(s)
}

// ParseFile parses the named file.
func ParseFile(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f, path)
}

// DefaultConfigPaths returns the configuration layers in the order they
// are applied (later wins): /etc/rootstrap/rootstrap.conf, the user's
// $XDG_CONFIG_HOME/rootstrap/rootstrap.conf (~/.config by default) and
// ./rootstrap.conf. getenv is os.Getenv in production.
func DefaultConfigPaths(getenv func(string) string) []string {
	paths := []string{"/etc/rootstrap/rootstrap.conf"}
	xdg := getenv("XDG_CONFIG_HOME")
	if xdg == "" {
		if home := getenv("HOME"); home != "" {
			xdg = filepath.Join(home, ".config")
		}
	}
	if xdg != "" {
		paths = append(paths, filepath.Join(xdg, "rootstrap", "rootstrap.conf"))
	}
	return append(paths, "rootstrap.conf")
}

// LoadConfig merges the files in paths that exist (missing ones are
// skipped) and then each of explicit, which must exist.
func LoadConfig(paths []string, explicit []string) (*Config, error) {
	c := NewConfig()
	for _, p := range paths {
		lc, err := ParseFile(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading config: %w", err)
		}
		c.Merge(lc)
	}
	for _, p := range explicit {
		lc, err := ParseFile(p)
		if err != nil {
			return nil, fmt.Errorf("reading config: %w", err)
		}
		c.Merge(lc)
	}
	return c, nil
}

// String renders the configuration in rootstrap.conf syntax, sections and
// keys in order; it is what the cache keys of tests hash, and what -v logs.
func (c *Config) String() string {
	var b strings.Builder
	for _, name := range c.order {
		s := c.sections[name]
		fmt.Fprintf(&b, "[%s]\n", name)
		for _, k := range s.keys {
			fmt.Fprintf(&b, "%s=%s\n", k, strings.ReplaceAll(s.vals[k], "\n", "\n\t"))
		}
	}
	return b.String()
}
