package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// How a file becomes a Config, and how its problems are reported.
//
// The decoder (go-toml) parses every value into its typed field, calling
// UnmarshalText for the types of types.go, and stops at the first error
// with its line, column and key. Two things it does not do are done here:
//   - it names an element of an array of tables without its index
//     ("peers.public_key"): docIndex knows where each key = value is, and
//     gives the key as "peers[1].public_key";
//   - it stops at the first bad value, and `config check` reports every
//     problem at once: the expression holding the bad value is blanked
//     (spaces, so lines and columns stay) and the file decoded again.
// It also hands a number or a boolean to UnmarshalText as text, stores an
// integer straight into a type built on one, and fills a struct type's
// fields from a table, so a key whose type parses text takes only a
// string: checked here, before decoding.

// maxProblems bounds the decoding rounds one file costs.
const maxProblems = 100

// Problem is one thing wrong with a configuration.
type Problem struct {
	Key  string // "peers[1].endpoint"; "" when the message names it
	Line int    // of the key in the file; 0 when unknown
	Col  int    // 0 when only the line is known
	Msg  string // what is wrong and how to fix it
}

// ValidationError lists every problem found, one per line: "FILE:LINE:COL:
// KEY: what to do" (FILE, LINE and COL when known).
type ValidationError struct {
	File     string
	Problems []Problem
}

func (v *ValidationError) Error() string {
	var b strings.Builder
	for i, p := range v.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		if v.File != "" {
			b.WriteString(v.File)
			if p.Line > 0 {
				b.WriteString(":" + strconv.Itoa(p.Line))
			}
			if p.Col > 0 {
				b.WriteString(":" + strconv.Itoa(p.Col))
			}
			b.WriteString(": ")
		}
		if p.Key != "" {
			b.WriteString(p.Key + ": ")
		}
		b.WriteString(p.Msg)
	}
	return b.String()
}

// has reports whether a problem about key was found already.
func (v *ValidationError) has(key string) bool {
	for _, p := range v.Problems {
		if strings.EqualFold(p.Key, key) {
			return true
		}
	}
	return false
}

// keyHints completes the errors of a type that serves several keys with
// the fix that suits each key.
var keyHints = map[string]string{
	"peers.public_key":        "; the peer prints its key with `tomoe status` (or: tomoe key public < its key file)",
	"bridges.public_key":      "; the bridge prints its key with `tomoe status`",
	"bridge.allow.public_key": "; the node prints its key with `tomoe status`",
	"admin.metrics":           ", e.g. \"127.0.0.1:9610\" (the metrics carry peer addresses: keep them on loopback)",
	"admin.web":               ", e.g. \"127.0.0.1:4680\" (the web UI listens on loopback only)",
	"bridge.tcp":              ", e.g. \"0.0.0.0:4610\" (the same port as listen.udp is fine)",
}

// decode decodes b (indexed in idx) into c, which holds the defaults, and
// reports every bad value, unknown key or syntax error it finds. fatal
// means c is not worth validating: the file is broken, or has unknown keys
// (often misspelt ones, whose absence validation would report as well).
func decode(b []byte, idx *docIndex, c *Config) (problems []Problem, fatal bool) {
	work := bytes.Clone(b)
	blanked := make([]bool, len(idx.tops))
	blank := func(kv *keyValue) {
		t := idx.tops[kv.top]
		for i := t.start; i < t.end; i++ {
			if work[i] != '\n' {
				work[i] = ' '
			}
		}
		blanked[kv.top] = true
	}
	headers := false
	for i := 0; i < len(idx.kvs) && len(problems) < maxProblems; i++ {
		kv := &idx.kvs[i]
		tk := textKeyOf(kv.field)
		whole := strings.EqualFold(tk, kv.field)
		if tk == "" || (whole && kv.kind == unstable.String) || (whole && kv.kind == unstable.Array && textLists[tk]) || (kv.top >= 0 && blanked[kv.top]) {
			continue
		}
		msg := fmt.Sprintf("got %s, but this key takes a string: write the value in quotes", kindName(kv.kind))
		if !whole {
			msg = fmt.Sprintf("%s takes a string, not a table: write its value in quotes", tk)
		}
		problems = append(problems, Problem{Key: kv.key, Line: kv.vline, Col: kv.vcol, Msg: msg})
		if kv.top < 0 {
			headers = true // a [table] header cannot be blanked alone
		} else {
			blank(kv)
		}
	}
	if headers {
		return problems, true
	}
	base := *c
	for len(problems) < maxProblems {
		*c = base
		err := toml.NewDecoder(bytes.NewReader(work)).DisallowUnknownFields().Decode(c)
		if err == nil {
			return problems, false
		}
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			for _, e := range strict.Errors {
				problems = append(problems, unknownKey(idx, &e))
			}
			return problems, true
		}
		var de *toml.DecodeError
		if !errors.As(err, &de) {
			return append(problems, Problem{Msg: err.Error()}), true
		}
		line, col := de.Position()
		kv := idx.at(offsetOf(work, line, col))
		if kv == nil || blanked[kv.top] {
			// A syntax error, or one about a table header.
			msg := strings.TrimPrefix(de.Error(), "toml: ")
			if k := strings.Join(de.Key(), "."); k != "" {
				msg += " (key " + k + ")"
			}
			return append(problems, Problem{Line: line, Col: col, Msg: msg}), true
		}
		problems = append(problems, Problem{Key: kv.key, Line: line, Col: col,
			Msg: typeHint(strings.TrimPrefix(de.Error(), "toml: ")) + keyHints[textKeyOf(kv.field)]})
		blank(kv)
	}
	return append(problems, Problem{Msg: fmt.Sprintf("stopped after %d problems", maxProblems)}), true
}

// unknownKey reports a key the Config has no field for, with the keys its
// table has.
func unknownKey(idx *docIndex, e *toml.DecodeError) Problem {
	line, _ := e.Position()
	key := e.Key()
	table := ""
	if len(key) > 1 {
		table = strings.Join(key[:len(key)-1], ".")
	}
	hint := ""
	if known, ok := knownKeys[table]; ok {
		hint = "; known keys here: " + strings.Join(known, ", ")
	}
	name := strings.Join(key, ".")
	if kv := idx.onLine(line, name); kv != nil {
		name = kv.key
	}
	return Problem{Line: line, Msg: fmt.Sprintf("unknown key %q%s", name, hint)}
}

// typeHint says what to write instead of a value of the wrong TOML type,
// in place of the decoder's "cannot decode TOML string into struct field
// config.TUN.MTU of type int"; other messages stay.
func typeHint(msg string) string {
	rest, ok := strings.CutPrefix(msg, "cannot decode TOML ")
	got, _, ok2 := strings.Cut(rest, " into ")
	i := strings.LastIndex(rest, " of type ")
	if !ok || !ok2 || i < 0 {
		return msg
	}
	var want string
	switch t := rest[i+len(" of type "):]; {
	case t == "int":
		want = "a number, without quotes"
	case t == "bool":
		want = "true or false, without quotes"
	case t == "[]string":
		want = `an array of strings, e.g. ["alice", "1000"]`
	case strings.HasPrefix(t, "[]config."):
		want = "an array of tables"
	case strings.HasPrefix(t, "config."):
		want = "a table"
	default:
		return msg
	}
	article := "a "
	if strings.ContainsAny(got[:1], "aeiou") {
		article = "an "
	}
	return "got " + article + got + ", but this key takes " + want
}

func kindName(k unstable.Kind) string {
	switch k {
	case unstable.Integer, unstable.Float:
		return "a number"
	case unstable.Bool:
		return "true or false"
	case unstable.Array:
		return "an array"
	case unstable.InlineTable, unstable.Table, unstable.ArrayTable:
		return "a table"
	}
	return "a date or time"
}

// offsetOf turns a 1-based line and column (in bytes) into an offset in b.
func offsetOf(b []byte, line, col int) int {
	off := 0
	for l := 1; l < line; l++ {
		i := bytes.IndexByte(b[off:], '\n')
		if i < 0 {
			return -1
		}
		off += i + 1
	}
	return off + col - 1
}

// textKeys are the keys (without indexes: "peers.public_key") whose type
// parses text.
var textKeys = func() map[string]bool {
	m := map[string]bool{}
	textLists = map[string]bool{}
	textType := reflect.TypeFor[encoding.TextUnmarshaler]()
	var walk func(prefix string, t reflect.Type)
	walk = func(prefix string, t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if !f.IsExported() || name == "" || name == "-" {
				continue
			}
			key := prefix + name
			ft := f.Type
			list := false
			if ft.Kind() == reflect.Slice && !reflect.PointerTo(ft).Implements(textType) {
				ft, list = ft.Elem(), true
			}
			switch {
			case reflect.PointerTo(ft).Implements(textType):
				m[key] = true
				if list {
					textLists[key] = true // a list of strings (peers.devices, l2.members)
				}
			case ft.Kind() == reflect.Struct:
				walk(key+".", ft)
			}
		}
	}
	walk("", reflect.TypeFor[Config]())
	return m
}()

// textLists are the text keys that take a list of strings.
var textLists map[string]bool

// textKeyOf returns the text key that field is, or is inside of
// ("peers.endpoint" for "peers.endpoint.Port"); "" if none. The decoder
// matches keys to fields without regard to case, and so does this.
func textKeyOf(field string) string {
	for i := 0; i <= len(field); i++ {
		if i == len(field) || field[i] == '.' {
			for k := range textKeys {
				if strings.EqualFold(k, field[:i]) {
					return k
				}
			}
		}
	}
	return ""
}

// docIndex is where each key = value of a document is: the decoder's
// positions, turned into keys with indexes.
type docIndex struct {
	kvs  []keyValue // every key = value, inner ones of inline tables included, and table headers
	tops []span     // the top-level expressions, which blanking removes whole
}

type span struct{ start, end int }

type keyValue struct {
	key   string // "peers[1].public_key"
	field string // "peers.public_key": the key without indexes
	kind  unstable.Kind
	start int // the first byte of the key
	end   int // past the value
	line  int // of the key
	vline int // and of the value (for a header, of its key)
	vcol  int
	top   int // index of the top-level expression in docIndex.tops; -1 for a header
}

// at returns the innermost key = value holding offset off, or nil.
func (d *docIndex) at(off int) *keyValue {
	var best *keyValue
	for i := range d.kvs {
		kv := &d.kvs[i]
		if kv.top >= 0 && kv.start <= off && off < kv.end && (best == nil || kv.end-kv.start < best.end-best.start) {
			best = kv
		}
	}
	return best
}

// onLine returns the key = value (or header) on line whose key without
// indexes is field.
func (d *docIndex) onLine(line int, field string) *keyValue {
	for i := range d.kvs {
		if d.kvs[i].line == line && strings.EqualFold(d.kvs[i].field, field) {
			return &d.kvs[i]
		}
	}
	return nil
}

// locate finds the line of key, or of the nearest enclosing table or
// element that the file writes ("peers[0]" for a missing
// "peers[0].endpoint").
func (d *docIndex) locate(key string) (line int) {
	for key != "" {
		for i := range d.kvs {
			if strings.EqualFold(d.kvs[i].key, key) {
				return d.kvs[i].line
			}
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			break
		}
		key = key[:i]
	}
	return 0
}

// indexDocument walks b as far as it parses.
func indexDocument(b []byte) *docIndex {
	d := &docIndex{}
	w := walker{d: d, doc: b, lines: []int{0}, arrays: map[string]int{}}
	for i, c := range b {
		if c == '\n' {
			w.lines = append(w.lines, i+1)
		}
	}
	var p unstable.Parser
	p.Reset(b)
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			w.header(e)
		case unstable.KeyValue:
			top := len(d.tops)
			d.tops = append(d.tops, span{int(e.Raw.Offset), int(e.Raw.Offset + e.Raw.Length)})
			w.keyValue(e, w.table, w.tableField, top)
		}
	}
	return d
}

type walker struct {
	d                 *docIndex
	doc               []byte
	lines             []int          // the offset where each line starts
	table, tableField string         // the current table: "peers[1]", "peers"
	arrays            map[string]int // elements of each array of tables so far, by indexed key
}

// position gives the 1-based line and column (in bytes) of offset off.
func (w *walker) position(off int) (line, col int) {
	line, _ = slices.BinarySearch(w.lines, off+1)
	return line, off - w.lines[line-1] + 1
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// header enters the table or array-of-tables element a header names.
func (w *walker) header(e *unstable.Node) {
	key, field := "", ""
	it := e.Key()
	first := -1
	for it.Next() {
		n := it.Node()
		if first < 0 {
			first = int(n.Raw.Offset)
		}
		key, field = join(key, string(n.Data)), join(field, string(n.Data))
		if it.IsLast() && e.Kind == unstable.ArrayTable {
			i := w.arrays[key]
			w.arrays[key] = i + 1
			key += "[" + strconv.Itoa(i) + "]"
		} else if i, ok := w.arrays[key]; ok {
			key += "[" + strconv.Itoa(i-1) + "]"
		}
	}
	w.table, w.tableField = key, field
	if first >= 0 {
		line, col := w.position(first)
		w.d.kvs = append(w.d.kvs, keyValue{key: key, field: field, kind: e.Kind, start: first, end: first, line: line, vline: line, vcol: col, top: -1})
	}
}

// keyValue records e, under the table prefix, and what its inline tables
// hold.
func (w *walker) keyValue(e *unstable.Node, prefix, prefixField string, top int) {
	key, field := prefix, prefixField
	it := e.Key()
	start, val := -1, 0
	for it.Next() {
		n := it.Node()
		if start < 0 {
			start = int(n.Raw.Offset)
		}
		val = int(n.Raw.Offset + n.Raw.Length)
		key, field = join(key, string(n.Data)), join(field, string(n.Data))
	}
	if start < 0 {
		return
	}
	end := int(e.Raw.Offset + e.Raw.Length)
	for val < end && strings.IndexByte(" \t=", w.doc[val]) >= 0 {
		val++ // past " = " to the value
	}
	v := e.Value()
	line, _ := w.position(start)
	vline, vcol := w.position(val)
	w.d.kvs = append(w.d.kvs, keyValue{key: key, field: field, kind: v.Kind, start: start, end: end,
		line: line, vline: vline, vcol: vcol, top: top})
	if textKeyOf(field) != "" {
		return
	}
	w.value(v, key, field, top)
}

// value records the key = value pairs inside inline tables, in v and in
// the arrays v holds.
func (w *walker) value(v *unstable.Node, key, field string, top int) {
	switch v.Kind {
	case unstable.InlineTable:
		for it := v.Children(); it.Next(); {
			if c := it.Node(); c.Kind == unstable.KeyValue {
				w.keyValue(c, key, field, top)
			}
		}
	case unstable.Array:
		i := 0
		for it := v.Children(); it.Next(); {
			c := it.Node()
			if c.Kind == unstable.Comment {
				continue
			}
			w.value(c, key+"["+strconv.Itoa(i)+"]", field, top)
			i++
		}
	}
}
