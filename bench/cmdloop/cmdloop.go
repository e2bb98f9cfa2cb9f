// Package cmdloop is the line protocol of the bench's helper programs
// (usbench, bridgesim): the bench writes one command per line on their
// stdin and reads one JSON object per line back.
package cmdloop

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"strings"
)

// Serve reads commands from r until r ends or ctx is done. Each non-empty
// line is split into fields and given to handle; its result, or
// {"error": "..."}, is written to out as one JSON line.
func Serve(ctx context.Context, r io.Reader, out *json.Encoder, handle func(ctx context.Context, fields []string) (any, error)) error {
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	for {
		var line string
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case line, ok = <-lines:
			if !ok {
				return nil
			}
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		res, err := handle(ctx, f)
		if err != nil {
			out.Encode(map[string]string{"error": err.Error()})
			continue
		}
		out.Encode(res)
	}
}
