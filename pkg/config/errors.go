package config

import (
	"fmt"
	"strings"
)

// Error is one problem in a config file, at a line.
type Error struct {
	File    string
	Line    int
	Section string // such as "forward 'web'"; empty outside a section
	Option  string // the option or list name; empty for the section itself
	Msg     string
}

// Error formats e as FILE:LINE: [SECTION: ][option 'NAME': ]MSG.
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:%d: ", e.File, e.Line)
	if e.Section != "" {
		b.WriteString(e.Section)
		b.WriteString(": ")
	}
	if e.Option != "" {
		fmt.Fprintf(&b, "option '%s': ", e.Option)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in a config file, in file order. A nil
// Errors means none.
type Errors []*Error

// Error joins the errors, one per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Err returns es as an error, or nil when es is empty.
func (es Errors) Err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}
