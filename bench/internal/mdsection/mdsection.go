// Package mdsection keeps parts of a generated Markdown file that another
// program writes: a part sits between two HTML comments,
//
//	<!-- begin NAME -->
//	...
//	<!-- end NAME -->
//
// and the programs that write the rest of the file carry it over, so that
// `go run ./bench` and `go run ./bench/sim` each rewrite only their own
// figures in bench/RESULTS.md.
package mdsection

import "strings"

func markers(name string) (begin, end string) {
	return "<!-- begin " + name + " -->\n", "<!-- end " + name + " -->\n"
}

// Get returns the part called name in doc, markers included, or "" if doc
// has none (or only one of its markers).
func Get(doc, name string) string {
	begin, end := markers(name)
	i := strings.Index(doc, begin)
	if i < 0 {
		return ""
	}
	j := strings.Index(doc[i:], end)
	if j < 0 {
		return ""
	}
	return doc[i : i+j+len(end)]
}

// Set returns doc with the part called name replaced by body (between
// fresh markers), or with it appended, after a blank line, if doc has
// none.
func Set(doc, name, body string) string {
	begin, end := markers(name)
	if !strings.HasSuffix(body, "\n") {
		body += "\n"
	}
	part := begin + body + end
	if old := Get(doc, name); old != "" {
		return strings.Replace(doc, old, part, 1)
	}
	if doc != "" && !strings.HasSuffix(doc, "\n\n") {
		if strings.HasSuffix(doc, "\n") {
			doc += "\n"
		} else {
			doc += "\n\n"
		}
	}
	return doc + part
}

// Keep returns fresh, a newly generated document, with the part called
// name carried over from old (the file as it was) if old has it and fresh
// does not.
func Keep(fresh, old, name string) string {
	part := Get(old, name)
	if part == "" || Get(fresh, name) != "" {
		return fresh
	}
	begin, end := markers(name)
	body := strings.TrimSuffix(strings.TrimPrefix(part, begin), end)
	return Set(fresh, name, body)
}
