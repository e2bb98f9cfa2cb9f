package webui

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/tomoe-net/tomoe/internal/adminapi"
)

// bufferWriter collects one in-process admin API response.
type bufferWriter struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (b *bufferWriter) Header() http.Header { return b.header }
func (b *bufferWriter) WriteHeader(code int) {
	if b.code == 0 {
		b.code = code
	}
}
func (b *bufferWriter) Write(p []byte) (int, error) {
	if b.code == 0 {
		b.code = http.StatusOK
	}
	if b.body.Len()+len(p) > 16<<20 {
		return 0, fmt.Errorf("admin API response over 16 MiB")
	}
	return b.body.Write(p)
}

// call runs one admin API request in-process: in (if not nil) is the JSON
// body, out (if not nil) receives the JSON answer. An error answer comes
// back as an *adminapi.APIError, as the CLI's client gives it.
func (s *Server) call(ctx context.Context, method, path string, in, out any) error {
	var body bytes.Buffer
	if in != nil {
		if err := json.NewEncoder(&body).Encode(in); err != nil {
			return err
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://tomoe"+path, &body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	w := &bufferWriter{header: http.Header{}}
	s.api.ServeHTTP(w, req)
	if w.code/100 != 2 {
		var e adminapi.Error
		if json.Unmarshal(w.body.Bytes(), &e) == nil && e.Error != "" {
			return &adminapi.APIError{Code: w.code, Message: e.Error}
		}
		return &adminapi.APIError{Code: w.code, Message: fmt.Sprintf("%s %s: status %d", method, path, w.code)}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(w.body.Bytes(), out); err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	return nil
}

func (s *Server) get(ctx context.Context, path string, out any) error {
	return s.call(ctx, http.MethodGet, path, nil, out)
}

func (s *Server) post(ctx context.Context, path string, in, out any) error {
	return s.call(ctx, http.MethodPost, path, in, out)
}

// events streams the admin API's GET /v1/events to the browser as it is:
// server-sent events, ended by the browser leaving or Close.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://tomoe/v1/events", nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	s.api.ServeHTTP(w, req)
}
