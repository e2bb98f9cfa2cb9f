package webui

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/webui/session"
)

// consoleData is the console page: GET /v1/console, with the matrix laid
// out as rows.
type consoleData struct {
	View     adminapi.ConsoleView
	Requests *adminapi.OrgRequestsResponse // join requests, when this node holds the organisation's key
	Labels   map[string]string             // address -> its number in the table
	Cols     []string
	Rows     []consoleRow
}

type consoleRow struct {
	Label string
	Cells []string
}

// consolePage is the console. It is not served over the overlay: there,
// a caller would read the other nodes with this node's rights.
func (s *Server) consolePage(w http.ResponseWriter, r *http.Request, sess *session.Session) {
	d := pageData{Title: "Console"}
	var cd consoleData
	if err := s.get(r.Context(), "/v1/console", &cd.View); err != nil {
		d.Error = err.Error()
	}
	if cd.View.Signs != "" {
		var rq adminapi.OrgRequestsResponse
		if err := s.get(r.Context(), "/v1/console/requests", &rq); err != nil {
			d.Error = "join requests: " + err.Error()
		} else {
			cd.Requests = &rq
		}
	}
	cd.Labels = map[string]string{}
	for i, n := range cd.View.Nodes {
		cd.Labels[n.Address] = fmt.Sprint(i + 1)
	}
	cells := map[[2]string]adminapi.ConsoleCell{}
	for _, c := range cd.View.Matrix {
		if _, ok := cells[[2]string{"", c.To}]; !ok {
			cells[[2]string{"", c.To}] = adminapi.ConsoleCell{}
			cd.Cols = append(cd.Cols, c.To)
		}
		cells[[2]string{c.From, c.To}] = c
	}
	for _, n := range cd.View.Nodes {
		row := consoleRow{Label: cd.Labels[n.Address]}
		for _, to := range cd.Cols {
			c, ok := cells[[2]string{n.Address, to}]
			switch {
			case to == n.Address:
				row.Cells = append(row.Cells, "·")
			case !ok:
				row.Cells = append(row.Cells, "?")
			default:
				row.Cells = append(row.Cells, cellText(c))
			}
		}
		cd.Rows = append(cd.Rows, row)
	}
	d.Data = cd
	s.render(w, "console", sess, d)
}

func cellText(c adminapi.ConsoleCell) string {
	parts := append([]string(nil), c.Allow...)
	for _, d := range c.Deny {
		parts = append(parts, "!"+d)
	}
	if len(parts) == 0 {
		return "–"
	}
	return strings.Join(parts, ", ")
}

// consoleRevoke is POST /v1/console/revoke: a member revoked by serial.
func (s *Server) consoleRevoke(w http.ResponseWriter, r *http.Request, sess *session.Session) {
	var res adminapi.ConsoleSignedResponse
	err := s.post(r.Context(), "/v1/console/revoke", adminapi.ConsoleRevokeRequest{Serial: trimmed(r, "serial")}, &res)
	s.changed(w, r, sess, "/console", fmt.Sprintf("%s revocation list version %d signed and pushed; it spreads to every node", res.Org, res.Version), err)
}

// consolePolicy is POST /v1/console/policy: tested, signed, pushed.
func (s *Server) consolePolicy(w http.ResponseWriter, r *http.Request, sess *session.Session) {
	var res adminapi.ConsoleSignedResponse
	err := s.post(r.Context(), "/v1/console/policy", adminapi.ConsolePolicyRequest{Policy: r.PostForm.Get("policy")}, &res)
	s.changed(w, r, sess, "/console", fmt.Sprintf("%s policy version %d: its tests passed, signed and pushed", res.Org, res.Version), err)
}

// consoleRule is POST /v1/console/rule: another node's rule.
func (s *Server) consoleRule(w http.ResponseWriter, r *http.Request, sess *session.Session) {
	req := adminapi.ConsoleRuleRequest{Node: trimmed(r, "node"), Op: trimmed(r, "op"), From: trimmed(r, "from"), Proto: trimmed(r, "proto"), Ports: trimmed(r, "ports")}
	err := s.post(r.Context(), "/v1/console/rule", req, nil)
	s.changed(w, r, sess, "/console", fmt.Sprintf("%s %s on %s: done", req.Op, req.From, req.Node), err)
}

// consoleApprove is POST /v1/console/approve: a join request approved.
func (s *Server) consoleApprove(w http.ResponseWriter, r *http.Request, sess *session.Session) {
	var res adminapi.OrgDecisionResponse
	err := s.post(r.Context(), "/v1/console/approve", adminapi.ConsoleApproveRequest{Node: trimmed(r, "node")}, &res)
	s.changed(w, r, sess, "/console", fmt.Sprintf("certificate %s signed for %s and handed to the bridges", res.Serial, short(res.Node)), err)
}
