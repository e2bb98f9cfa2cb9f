package webui

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/webui/session"
)

// policyData is the policy page: the rules, and an explanation when the
// explain form was sent (a GET: it changes nothing).
type policyData struct {
	Rules   []adminapi.Rule
	Explain *adminapi.ExplainRequest
	Answer  *adminapi.ExplainResponse
	Problem string // the explain request's error
}

func (s *Server) policyPage(w http.ResponseWriter, r *http.Request, sess *session.Session) {
	d := pageData{Title: "Policy"}
	var pd policyData
	if err := s.get(r.Context(), "/v1/policy", &pd.Rules); err != nil {
		d.Error = err.Error()
	}
	q := r.URL.Query()
	if from := strings.TrimSpace(q.Get("from")); from != "" {
		req := adminapi.ExplainRequest{From: from, To: strings.TrimSpace(q.Get("to")), Proto: q.Get("proto")}
		pd.Explain = &req
		if p := strings.TrimSpace(q.Get("port")); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 || n > 65535 {
				pd.Problem = fmt.Sprintf("port %q: a number 1..65535", p)
			}
			req.Port = n
		}
		if pd.Problem == "" {
			var ans adminapi.ExplainResponse
			if err := s.post(r.Context(), "/v1/policy/explain", req, &ans); err != nil {
				pd.Problem = err.Error()
			} else {
				pd.Answer = &ans
			}
		}
	}
	d.Data = pd
	s.render(w, "policy", sess, d)
}

// policyAdd adds an allow or deny rule (POST /v1/policy/allow or deny);
// "for" (a duration) makes it expire.
func (s *Server) policyAdd(w http.ResponseWriter, r *http.Request, sess *session.Session) {
	req := adminapi.AllowRequest{From: trimmed(r, "from"), To: trimmed(r, "to"), Proto: trimmed(r, "proto"), Ports: trimmed(r, "ports")}
	if f := trimmed(r, "for"); f != "" {
		d, err := time.ParseDuration(f)
		if err != nil || d <= 0 {
			s.changed(w, r, sess, "/policy", "", fmt.Errorf("for %q: a duration such as 2h or 30m", f))
			return
		}
		req.Until = time.Now().Add(d).UTC().Format(time.RFC3339)
	}
	path, verb := "/v1/policy/allow", "allowed"
	if r.PostForm.Get("action") == "deny" {
		path, verb = "/v1/policy/deny", "denied"
	}
	var resp adminapi.AllowResponse
	err := s.post(r.Context(), path, req, &resp)
	msg := fmt.Sprintf("%s: from %s %s %s", verb, resp.Rule.From, resp.Rule.Proto, resp.Rule.Ports)
	if err == nil && !resp.Added {
		msg = "already in force: " + msg
	}
	s.changed(w, r, sess, "/policy", msg, err)
}

// policyRevoke removes every allow rule for an identity and cuts its
// sessions (POST /v1/policy/revoke), or the API deny rules for it
// (undeny).
func (s *Server) policyRevoke(w http.ResponseWriter, r *http.Request, sess *session.Session) {
	from := trimmed(r, "from")
	if r.PostForm.Get("action") == "deny" {
		var resp adminapi.UndenyResponse
		err := s.post(r.Context(), "/v1/policy/undeny", adminapi.UndenyRequest{From: from}, &resp)
		s.changed(w, r, sess, "/policy", fmt.Sprintf("removed %d deny rules for %s", len(resp.Removed), from), err)
		return
	}
	var resp adminapi.RevokeResponse
	err := s.post(r.Context(), "/v1/policy/revoke", adminapi.RevokeRequest{From: from}, &resp)
	s.changed(w, r, sess, "/policy", fmt.Sprintf("revoked %d rules for %s; sessions cut: %d", len(resp.Removed), from, len(resp.PeersCut)), err)
}

func (s *Server) routesPage(w http.ResponseWriter, r *http.Request, sess *session.Session) {
	d := pageData{Title: "Routes and exits"}
	var rt adminapi.Routes
	if err := s.get(r.Context(), "/v1/routes", &rt); err != nil {
		d.Error = err.Error()
	}
	d.Data = rt
	s.render(w, "routes", sess, d)
}

// routesChange is POST /v1/routes/change: offer, withdraw, accept, unaccept.
func (s *Server) routesChange(w http.ResponseWriter, r *http.Request, sess *session.Session) {
	req := adminapi.RouteChange{Op: r.PostForm.Get("op"), Prefix: trimmed(r, "prefix"), From: trimmed(r, "from"), Masquerade: r.PostForm.Get("masquerade") != ""}
	switch req.Op {
	case adminapi.RouteOffer, adminapi.RouteWithdraw, adminapi.RouteAccept, adminapi.RouteUnaccept:
	default:
		s.changed(w, r, sess, "/routes", "", fmt.Errorf("unknown route change %q", req.Op))
		return
	}
	err := s.post(r.Context(), "/v1/routes/change", req, nil)
	s.changed(w, r, sess, "/routes", fmt.Sprintf("%s %s done", req.Op, req.Prefix), err)
}

func (s *Server) servicesPage(w http.ResponseWriter, r *http.Request, sess *session.Session) {
	d := pageData{Title: "Services"}
	var sv adminapi.Services
	if err := s.get(r.Context(), "/v1/services", &sv); err != nil {
		d.Error = err.Error()
	}
	d.Data = sv
	s.render(w, "services", sess, d)
}

// exposeChange is POST /v1/services/expose: add or remove a service.
func (s *Server) exposeChange(w http.ResponseWriter, r *http.Request, sess *session.Session) {
	port, err := strconv.ParseUint(trimmed(r, "port"), 10, 16)
	if err != nil || port == 0 {
		s.changed(w, r, sess, "/services", "", fmt.Errorf("port %q: a number 1..65535", trimmed(r, "port")))
		return
	}
	req := adminapi.ExposeChange{Proto: trimmed(r, "proto"), Port: uint16(port), Target: trimmed(r, "target"), Remove: r.PostForm.Get("remove") != ""}
	verb := "exposed"
	if req.Remove {
		verb = "removed"
	}
	err = s.post(r.Context(), "/v1/services/expose", req, nil)
	s.changed(w, r, sess, "/services", fmt.Sprintf("%s %s/%d", verb, req.Proto, req.Port), err)
}

// bridgesData is the bridges page: the bridges this node joins, and on
// a bridge its role and registered nodes.
type bridgesData struct {
	Bridges []adminapi.Bridge
	Role    *adminapi.BridgeRole
	Nodes   []adminapi.BridgeNode
}

func (s *Server) bridgesPage(w http.ResponseWriter, r *http.Request, sess *session.Session) {
	d := pageData{Title: "Bridges"}
	var st adminapi.Status
	var bd bridgesData
	if err := s.get(r.Context(), "/v1/status", &st); err != nil {
		d.Error = err.Error()
	}
	bd.Bridges, bd.Role = st.Bridges, st.BridgeRole
	if bd.Role != nil {
		if err := s.get(r.Context(), "/v1/bridge/nodes", &bd.Nodes); err != nil {
			d.Error = err.Error()
		}
	}
	d.Data = bd
	s.render(w, "bridges", sess, d)
}

// bridgeToken is POST /v1/bridge/tokens; the token is shown once.
func (s *Server) bridgeToken(w http.ResponseWriter, r *http.Request, sess *session.Session) {
	uses, err := strconv.Atoi(trimmed(r, "uses"))
	if err != nil || uses < 1 {
		s.changed(w, r, sess, "/bridges", "", errors.New("uses: a number, at least 1"))
		return
	}
	var resp adminapi.TokenResponse
	err = s.post(r.Context(), "/v1/bridge/tokens", adminapi.TokenRequest{Uses: uses, TTL: trimmed(r, "ttl")}, &resp)
	s.changed(w, r, sess, "/bridges", fmt.Sprintf("join token (shown once; %d uses until %s): %s", resp.Uses, resp.Expires, resp.Token), err)
}

// bridgeRevoke is POST /v1/bridge/revoke.
func (s *Server) bridgeRevoke(w http.ResponseWriter, r *http.Request, sess *session.Session) {
	var resp adminapi.BridgeRevokeResponse
	err := s.post(r.Context(), "/v1/bridge/revoke", adminapi.BridgeRevokeRequest{PublicKey: trimmed(r, "public_key")}, &resp)
	s.changed(w, r, sess, "/bridges", fmt.Sprintf("revoked %s (was registered: %v)", resp.PublicKey, resp.WasRegistered), err)
}
