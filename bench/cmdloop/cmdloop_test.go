package cmdloop

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestServe(t *testing.T) {
	var out bytes.Buffer
	in := strings.NewReader("echo a b\n\n  \nfail\n")
	err := Serve(context.Background(), in, json.NewEncoder(&out), func(_ context.Context, f []string) (any, error) {
		if f[0] == "fail" {
			return nil, errors.New("no")
		}
		return f[1:], nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "[\"a\",\"b\"]\n{\"error\":\"no\"}\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
