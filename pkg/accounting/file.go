package accounting

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// FileName is the counters file in Config.Dir.
const FileName = "accounting"

// fileMagic starts the first line of the file, followed by the version.
const (
	fileMagic   = "sluice-accounting"
	fileVersion = 1
)

// maxFileSize bounds the file read back: far more than MaxRecords lines.
const maxFileSize = 64 << 20

// The file is text, one identity per line, so that it can be read with
// less and mended by hand in an emergency:
//
//	sluice-accounting 1
//	rec KEY FIRST LAST UP DOWN REQUESTS CONNS ONLINE_NS [START UP DOWN ONLINE_NS] x3
//	end COUNT CRC32C
//
// FIRST, LAST and the period STARTs are unix seconds (0: never); the three
// bracketed groups are the current day, week and month. The end line
// carries the number of records and the CRC-32C (Castagnoli) of every byte
// before it, so a truncated or altered file is detected.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// state is one record as saved.
type state struct {
	key     string
	total   Counters
	periods [numPeriods]usage
}

// CorruptError is a counters file that could not be read back; it was
// renamed to Aside.
type CorruptError struct {
	Path, Aside string
	Err         error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("accounting file %s is corrupt (%v): set aside as %s, counting starts from zero", e.Path, e.Err, e.Aside)
}

func (e *CorruptError) Unwrap() error { return e.Err }

func unixOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func timeOrZero(s int64) time.Time {
	if s == 0 {
		return time.Time{}
	}
	return time.Unix(s, 0)
}

// encode writes states in the file format.
func encode(states []state) []byte {
	var b []byte
	b = fmt.Appendf(b, "%s %d\n", fileMagic, fileVersion)
	for _, st := range states {
		t := st.total
		b = fmt.Appendf(b, "rec %s %d %d %d %d %d %d %d", st.key, unixOrZero(t.First), unixOrZero(t.Last),
			t.BytesUp, t.BytesDown, t.Requests, t.Conns, int64(t.Online))
		for _, u := range st.periods {
			b = fmt.Appendf(b, " %d %d %d %d", unixOrZero(u.start), u.bytesUp, u.bytesDown, int64(u.online))
		}
		b = append(b, '\n')
	}
	return fmt.Appendf(b, "end %d %08x\n", len(states), crc32.Checksum(b, castagnoli))
}

// recFields is the number of fields of a rec line, "rec" included.
const recFields = 2 + 7 + 4*int(numPeriods)

// validKey reports whether k can be a key in the file: a user name
// (letters, digits, _) or an address identity.
func validKey(k string) bool {
	if k == "" || len(k) > 128 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_:./-%", c) >= 0) {
			return false
		}
	}
	return true
}

// parse reads the file format; any deviation is an error naming the line.
func parse(data []byte) ([]state, error) {
	end := bytes.LastIndex(data, []byte("\nend "))
	if end < 0 {
		return nil, errors.New("no end line: the file is truncated")
	}
	body, tail := data[:end+1], string(data[end+1:])
	if !strings.HasSuffix(tail, "\n") || strings.Count(tail, "\n") != 1 {
		return nil, errors.New("bytes after the end line, or the end line is cut short")
	}
	ef := strings.Split(strings.TrimSuffix(tail, "\n"), " ")
	if len(ef) != 3 || ef[0] != "end" || len(ef[2]) != 8 {
		return nil, fmt.Errorf("bad end line %q", strings.TrimSpace(tail))
	}
	n, err1 := parseCount(ef[1])
	s64, err2 := strconv.ParseUint(ef[2], 16, 32)
	if err1 != nil || err2 != nil || ef[2] != fmt.Sprintf("%08x", s64) || n > maxFileSize {
		return nil, fmt.Errorf("bad end line %q", strings.TrimSpace(tail))
	}
	count, sum := int(n), uint32(s64)
	if got := crc32.Checksum(body, castagnoli); got != sum {
		return nil, fmt.Errorf("checksum mismatch: file says %08x, content is %08x", sum, got)
	}
	lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	if lines[0] != fmt.Sprintf("%s %d", fileMagic, fileVersion) {
		return nil, fmt.Errorf("line 1: %q: want %q (another version?)", lines[0], fmt.Sprintf("%s %d", fileMagic, fileVersion))
	}
	if count != len(lines)-1 {
		return nil, fmt.Errorf("end line counts %d records, the file has %d", count, len(lines)-1)
	}
	out := make([]state, 0, count)
	seen := make(map[string]bool, count)
	for i, line := range lines[1:] {
		st, err := parseRec(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+2, err)
		}
		if seen[st.key] {
			return nil, fmt.Errorf("line %d: %s appears twice", i+2, st.key)
		}
		seen[st.key] = true
		out = append(out, st)
	}
	return out, nil
}

func parseRec(line string) (state, error) {
	f := strings.Split(line, " ")
	if len(f) != recFields || f[0] != "rec" {
		return state{}, fmt.Errorf("want a rec line of %d fields", recFields)
	}
	if !validKey(f[1]) {
		return state{}, fmt.Errorf("bad key %q", f[1])
	}
	nums := make([]uint64, len(f)-2)
	for i, s := range f[2:] {
		n, err := parseCount(s)
		if err != nil {
			return state{}, fmt.Errorf("field %d: %q is not a count", i+3, s)
		}
		nums[i] = n
	}
	st := state{key: f[1]}
	st.total = Counters{First: timeOrZero(int64(nums[0])), Last: timeOrZero(int64(nums[1])),
		BytesUp: nums[2], BytesDown: nums[3], Requests: nums[4], Conns: nums[5], Online: time.Duration(nums[6])}
	for p := range numPeriods {
		g := nums[7+4*int(p):]
		st.periods[p] = usage{start: timeOrZero(int64(g[0])), bytesUp: g[1], bytesDown: g[2], online: time.Duration(g[3])}
	}
	return st, nil
}

// parseCount parses a decimal count as encode writes it: digits only, no
// leading zero, below 2^63.
func parseCount(s string) (uint64, error) {
	if len(s) > 1 && s[0] == '0' {
		return 0, errors.New("leading zero")
	}
	return strconv.ParseUint(s, 10, 63)
}

// readFile returns the content of dir/FileName, nil when there is none.
func readFile(dir string) ([]byte, error) {
	path := filepath.Join(dir, FileName)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("accounting: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("accounting: read %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("accounting: %s is larger than %d bytes", path, maxFileSize)
	}
	return data, nil
}

// Verify reads the counters file in dir without changing anything (for
// `sluice check`): it returns the number of identities in it (0 when there
// is no file), or the reason New would set it aside.
func Verify(dir string) (int, error) {
	data, err := readFile(dir)
	if err != nil || data == nil {
		return 0, err
	}
	states, err := parse(data)
	if err != nil {
		return 0, fmt.Errorf("accounting file %s is corrupt: %w", filepath.Join(dir, FileName), err)
	}
	return len(states), nil
}

// staleTemp is the age past which a temp file is the leftover of a crash
// during a write (a write takes milliseconds).
const staleTemp = time.Minute

// removeStaleTemps deletes temp files a crash left in dir. Recent ones may
// be another process's write in progress (a second sluice given the same
// directory) and stay.
func removeStaleTemps(dir string, now time.Time) {
	tmps, _ := filepath.Glob(filepath.Join(dir, FileName+".*.tmp"))
	for _, p := range tmps {
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() && now.Sub(fi.ModTime()) > staleTemp {
			os.Remove(p)
		}
	}
}

// loadFile reads dir/FileName. A missing file is no error and no records;
// a corrupt one is renamed aside and reported as *CorruptError.
func loadFile(dir string, now time.Time) ([]state, error) {
	removeStaleTemps(dir, time.Now())
	data, err := readFile(dir)
	if err != nil || data == nil {
		return nil, err
	}
	states, perr := parse(data)
	if perr == nil {
		return states, nil
	}
	path := filepath.Join(dir, FileName)
	aside := filepath.Join(dir, FileName+"."+now.UTC().Format("20060102T150405")+".corrupt")
	if err := os.Rename(path, aside); err != nil {
		return nil, fmt.Errorf("accounting: %s is corrupt (%v) and cannot be set aside: %w", path, perr, err)
	}
	return nil, &CorruptError{Path: path, Aside: aside, Err: perr}
}

// saveFile replaces dir/FileName with states: write a temp file, fsync,
// rename over the old one, fsync the directory. A crash at any point
// leaves either the old file or the new one.
func saveFile(dir string, states []state) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("accounting: %w", err)
	}
	path := filepath.Join(dir, FileName)
	// A temp file of its own, so that two writers (a second sluice given
	// the same directory by mistake) never interleave in one file.
	f, err := os.CreateTemp(dir, FileName+".*.tmp")
	if err != nil {
		return fmt.Errorf("accounting: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(encode(states))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("accounting: write %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("accounting: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("accounting: sync %s: %w", dir, err)
	}
	return nil
}
