package config

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
)

// Section is one `config TYPE 'NAME'` block of a UCI file, as written,
// before the schema gives its options a meaning.
type Section struct {
	Type string
	// Name is the section's name; empty for an anonymous section.
	Name    string
	Line    int       // line of the config statement
	Options []*Option // in file order; a list statement adds one value
	// Broken is set when a line of the section could not be parsed, so
	// that a missing option is not reported on top of the real error.
	Broken bool
}

// Option is one option, or every `list` statement of one name, in a
// section.
type Option struct {
	Name   string
	Line   int      // line of the first statement
	Lines  []int    // line of each value
	Values []string // one for an option, one per list statement
	IsList bool
}

// maxLine bounds one line of a config file; longer ones are an error.
const maxLine = 64 << 10

// ParseUCI splits a UCI file into sections. It knows the syntax only:
// `package NAME`, `config TYPE [NAME]`, `option NAME VALUE`, `list NAME
// VALUE`, comments from '#' to the end of the line, and quoting as uci
// parses it: single quotes keep everything literally, double quotes and
// unquoted words take a backslash to escape the next character, and quoted
// and unquoted parts next to each other form one word ('a'"b"c is abc).
// file names the input in errors. Every syntax error is returned, each as
// an *Error with its line.
func ParseUCI(file string, data []byte) ([]*Section, Errors) {
	var (
		secs []*Section
		errs Errors
		cur  *Section
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 4096), maxLine)
	line := 0
	for sc.Scan() {
		line++
		errAt := func(option, format string, args ...any) {
			e := &Error{File: file, Line: line, Option: option, Msg: fmt.Sprintf(format, args...)}
			if cur != nil {
				e.Section = cur.label()
				cur.Broken = true
			}
			errs = append(errs, e)
		}
		words, err := splitWords(sc.Text())
		if err != nil {
			errAt("", "%v", err)
			continue
		}
		if len(words) == 0 {
			continue
		}
		switch kw := words[0]; kw {
		case "package":
			if len(words) != 2 {
				errAt("", "package takes one name, got %d words", len(words)-1)
			}
		case "config":
			if len(words) < 2 || len(words) > 3 {
				cur = nil
				errAt("", "config takes a type and an optional name: config TYPE 'NAME'")
				continue
			}
			cur = &Section{Type: words[1], Line: line}
			if len(words) == 3 {
				cur.Name = words[2]
			}
			secs = append(secs, cur)
			if !validName(cur.Type) {
				errAt("", "section type %q: use letters, digits and '_'", cur.Type)
			}
			if len(words) == 3 && !validName(cur.Name) {
				errAt("", "section name %q: use letters, digits and '_'", cur.Name)
			}
		case "option", "list":
			if len(words) != 3 {
				name := ""
				if len(words) > 1 {
					name = words[1]
				}
				if len(words) < 3 {
					errAt(name, "%s needs a name and a value: %s NAME 'VALUE'", kw, kw)
				} else {
					errAt(name, "%s has %d values, want one (quote values that contain spaces)", kw, len(words)-2)
				}
				continue
			}
			if cur == nil {
				errAt(words[1], "%s outside a config section", kw)
				continue
			}
			name, value := words[1], words[2]
			if !validName(name) {
				errAt(name, "option name %q: use letters, digits and '_'", name)
				continue
			}
			isList := kw == "list"
			if prev := cur.option(name); prev != nil {
				switch {
				case prev.IsList != isList:
					errAt(name, "%q is used both as an option and as a list (line %d)", name, prev.Line)
				case !isList:
					errAt(name, "option %q is set twice (first on line %d)", name, prev.Line)
				default:
					prev.Values = append(prev.Values, value)
					prev.Lines = append(prev.Lines, line)
				}
				continue
			}
			cur.Options = append(cur.Options, &Option{Name: name, Line: line, Lines: []int{line}, Values: []string{value}, IsList: isList})
		default:
			errAt("", "unknown statement %q: want config, option, list or package", kw)
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, &Error{File: file, Line: line + 1, Msg: err.Error()})
	}
	return secs, errs
}

func (s *Section) option(name string) *Option {
	for _, o := range s.Options {
		if o.Name == name {
			return o
		}
	}
	return nil
}

// label names the section in errors: forward 'web', or forward (anonymous,
// line 3).
func (s *Section) label() string {
	if s.Name == "" {
		return fmt.Sprintf("%s (anonymous, line %d)", s.Type, s.Line)
	}
	return fmt.Sprintf("%s '%s'", s.Type, s.Name)
}

// validName reports whether s is a valid uci type, section or option name.
func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// splitWords splits one line into words the way uci does.
func splitWords(line string) ([]string, error) {
	var (
		words []string
		w     strings.Builder
		in    bool // inside a word
	)
	end := func() {
		if in {
			words = append(words, w.String())
			w.Reset()
			in = false
		}
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r':
			end()
		case c == '#':
			end()
			return words, nil
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated ' quote")
			}
			w.WriteString(line[i+1 : i+1+j])
			in = true
			i += j + 1
		case c == '"':
			in = true
			closed := false
			for i++; i < len(line); i++ {
				if line[i] == '"' {
					closed = true
					break
				}
				if line[i] == '\\' {
					if i+1 == len(line) {
						break
					}
					i++
				}
				w.WriteByte(line[i])
			}
			if !closed {
				return nil, fmt.Errorf("unterminated \" quote")
			}
		case c == '\\':
			if i+1 == len(line) {
				return nil, fmt.Errorf("backslash at the end of the line (line continuation is not supported)")
			}
			i++
			w.WriteByte(line[i])
			in = true
		default:
			w.WriteByte(c)
			in = true
		}
	}
	end()
	return words, nil
}
