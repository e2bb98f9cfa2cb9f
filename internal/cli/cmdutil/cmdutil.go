// Package cmdutil is what the command groups beside package cli (orgcmd,
// uicmd, svccmd, consolecmd, devicecmd, l2cmd) share with it: errors that carry the exit
// status cli.Main gives, and the small output helpers.
package cmdutil

import (
	"encoding/json"
	"fmt"
	"io"
)

// Exit statuses: 1 failure, 2 bad usage or input.
const (
	ExitFailure = 1
	ExitUsage   = 2
)

// ExitError carries the exit status a command's failure calls for; an
// empty message means the command has said all there is to say.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode is the exit status.
func (e *ExitError) ExitCode() int { return e.Code }

// Usage is a bad-usage error (exit status 2).
func Usage(format string, args ...any) error {
	return &ExitError{Code: ExitUsage, Err: fmt.Errorf(format, args...)}
}

// Failure is a failure (exit status 1).
func Failure(err error) error { return &ExitError{Code: ExitFailure, Err: err} }

// PrintJSON writes v as indented JSON.
func PrintJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// OrDash is s, or "-" when it is empty.
func OrDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
