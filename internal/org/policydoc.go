package org

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"time"
)

// MaxPolicyBytes bounds the JSON a policy document carries.
const MaxPolicyBytes = 64 << 10

const (
	policyMagic      = "tomoe-policy-v1\x00"
	policyTextPrefix = "tomoe-orgpolicy:"
	policyFixed      = len(policyMagic) + 32 + 8 + 8 + 4
	maxPolicyBinary  = policyFixed + MaxPolicyBytes + ed25519.SignatureSize
)

// PolicyRule is one rule of an organisation's policy, as text that
// package policy interprets: Action is "allow" or "deny".
type PolicyRule struct {
	Action string `json:"action"`
	From   string `json:"from"`
	To     string `json:"to,omitempty"`
	Proto  string `json:"proto,omitempty"`
	Ports  string `json:"ports,omitempty"`
	Until  string `json:"until,omitempty"`
}

// PolicyTest is an expectation the policy must meet before a node applies
// it (package policy runs them).
type PolicyTest struct {
	From   string   `json:"from"`
	To     string   `json:"to,omitempty"`
	Groups []string `json:"groups,omitempty"`
	Proto  string   `json:"proto,omitempty"`
	Port   int      `json:"port,omitempty"`
	Expect string   `json:"expect"`
}

// policyJSON is the JSON a policy document carries; its canonical form is
// what encoding/json makes of it, with empty lists as [].
type policyJSON struct {
	Rules []PolicyRule `json:"rules"`
	Tests []PolicyTest `json:"tests"`
}

// PolicyDoc is an organisation's signed, versioned policy. Versions only
// grow; a node applies the highest version it has verified.
//
// A PolicyDoc from ParsePolicyDoc or DecodePolicyDoc is canonical but
// unchecked until Verify.
type PolicyDoc struct {
	Org     PublicKey
	Version uint64
	Issued  time.Time
	Rules   []PolicyRule
	Tests   []PolicyTest

	body []byte
	sig  []byte
}

func (d *PolicyDoc) policyJSON() ([]byte, error) {
	p := policyJSON{Rules: d.Rules, Tests: d.Tests}
	if p.Rules == nil {
		p.Rules = []PolicyRule{}
	}
	if p.Tests == nil {
		p.Tests = []PolicyTest{}
	}
	for i, r := range p.Rules {
		if r.Action != "allow" && r.Action != "deny" {
			return nil, fmt.Errorf("rule %d: action %q: must be allow or deny", i+1, r.Action)
		}
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxPolicyBytes {
		return nil, fmt.Errorf("policy is %d bytes of JSON: at most %d", len(b), MaxPolicyBytes)
	}
	return b, nil
}

func (d *PolicyDoc) encodeBody() ([]byte, error) {
	if d.Org.IsZero() {
		return nil, fmt.Errorf("organisation key is unset")
	}
	if d.Version == 0 {
		return nil, fmt.Errorf("version 0: versions start at 1")
	}
	if d.Issued.Unix() < 0 {
		return nil, fmt.Errorf("issued %s: before 1970", fmtTime(d.Issued))
	}
	js, err := d.policyJSON()
	if err != nil {
		return nil, err
	}
	w := writer{b: make([]byte, 0, policyFixed+len(js))}
	w.raw([]byte(policyMagic))
	w.key(d.Org)
	w.u64(d.Version)
	w.time(d.Issued)
	w.u32(uint32(len(js)))
	w.raw(js)
	return w.b, nil
}

// SignPolicy signs rules and tests as the organisation's next policy
// version (the state file beside the key remembers the last one).
func (s *Signer) SignPolicy(rules []PolicyRule, tests []PolicyTest, now time.Time) (*PolicyDoc, error) {
	st, path, err := s.loadState()
	if err != nil {
		return nil, err
	}
	d := &PolicyDoc{Org: s.Public(), Version: st.PolicyVersion + 1, Issued: now.UTC().Truncate(time.Second), Rules: rules, Tests: tests}
	body, err := d.encodeBody()
	if err != nil {
		return nil, fmt.Errorf("sign policy: %w", err)
	}
	// Keep the decoded shape (empty lists, not nil) so a signed document
	// and its parsed copy are alike.
	if d.Rules == nil {
		d.Rules = []PolicyRule{}
	}
	if d.Tests == nil {
		d.Tests = []PolicyTest{}
	}
	d.body = body
	d.sig = ed25519.Sign(s.key, body)
	st.PolicyVersion = d.Version
	if err := saveState(path, st); err != nil {
		return nil, fmt.Errorf("sign policy: %w", err)
	}
	return d, nil
}

// DecodePolicyDoc decodes the binary form strictly, the JSON included (no
// unknown fields, canonical form). It does not check the signature.
func DecodePolicyDoc(b []byte) (*PolicyDoc, error) {
	if len(b) > maxPolicyBinary {
		return nil, fmt.Errorf("policy document: %d bytes is longer than any valid document", len(b))
	}
	body, sig, err := splitSigned(b, policyMagic, "policy document")
	if err != nil {
		return nil, err
	}
	r := reader{b: body[len(policyMagic):]}
	d := &PolicyDoc{}
	d.Org = r.key("organisation key")
	d.Version = r.u64("version")
	d.Issued = r.time("issued")
	n := r.u32("policy length")
	if r.err == nil && (n > MaxPolicyBytes || int(n) != len(r.b)) {
		r.fail("policy length %d: the document holds %d bytes after it", n, len(r.b))
	}
	js := r.bytes(int(n), "policy")
	if r.err != nil {
		return nil, fmt.Errorf("policy document: %w", r.err)
	}
	var p policyJSON
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("policy document: policy JSON: %w", err)
	}
	d.Rules, d.Tests = p.Rules, p.Tests
	again, err := d.encodeBody()
	if err != nil {
		return nil, fmt.Errorf("policy document: %w", err)
	}
	if !bytes.Equal(again, body) {
		return nil, fmt.Errorf("policy document: %w", errNotCanonical)
	}
	if d.Rules == nil {
		d.Rules = []PolicyRule{}
	}
	if d.Tests == nil {
		d.Tests = []PolicyTest{}
	}
	d.body = cloneBytes(body)
	d.sig = cloneBytes(sig)
	return d, nil
}

// ParsePolicyDoc parses the text form ("tomoe-orgpolicy:" + base64url);
// surrounding whitespace is ignored. It does not check the signature.
func ParsePolicyDoc(text string) (*PolicyDoc, error) {
	b, err := decodeText(text, policyTextPrefix, "policy document", maxPolicyBinary)
	if err != nil {
		return nil, err
	}
	return DecodePolicyDoc(b)
}

// Binary returns the binary form: the signed body and the signature.
func (d *PolicyDoc) Binary() []byte {
	out := make([]byte, 0, len(d.body)+len(d.sig))
	return append(append(out, d.body...), d.sig...)
}

// Text returns the one-line text form, "tomoe-orgpolicy:" + base64url.
func (d *PolicyDoc) Text() string { return encodeText(policyTextPrefix, d.Binary()) }

// Verify checks that org signed d (ErrWrongOrg) over its fields as they
// are now (ErrBadSignature).
func (d *PolicyDoc) Verify(org PublicKey) error {
	if d.Org != org {
		return fmt.Errorf("policy version %d is from organisation %s, not %s: %w", d.Version, d.Org, org, ErrWrongOrg)
	}
	body, err := d.encodeBody()
	if err != nil || !bytes.Equal(body, d.body) || !verifySig(org, d.body, d.sig) {
		return fmt.Errorf("policy version %d: %w: not signed by %s as it stands", d.Version, ErrBadSignature, org)
	}
	return nil
}
