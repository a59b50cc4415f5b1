// Package fleetindex is otaflow's fleet index, as AWS IoT fleet indexing serves it: AWS's query
// syntax (field:value, phrases, wildcards, ranges, comparisons, AND/OR/NOT and the hyphen,
// grouping and field grouping), an inverted index of things (registry, thing groups,
// connectivity and named shadows) kept up to date as they change, and the aggregations
// (statistics, percentiles, cardinality, buckets). Queries are answered from the index's
// postings, never by reading every thing.
package fleetindex

import (
	"fmt"
	"strings"
	"unicode"
)

// Node is a parsed query.
type Node interface{ node() }

type (
	// And matches what every part matches; Or what any part matches; Not what its part does not.
	And struct{ Parts []Node }
	Or  struct{ Parts []Node }
	Not struct{ Part Node }
	// Term matches a field's value: exactly (case-insensitively), or as a pattern with * and ?.
	// An empty Field searches every field.
	Term struct {
		Field, Value string
		Pattern      bool
	}
	// Range matches a field's values between Lo and Hi (nil: open), numerically when both
	// sides are numbers.
	Range struct {
		Field          string
		Lo, Hi         *string
		LoIncl, HiIncl bool
	}
)

func (And) node()   {}
func (Or) node()    {}
func (Not) node()   {}
func (Term) node()  {}
func (Range) node() {}

// QueryError is a query the syntax does not allow: AWS's InvalidQueryException.
type QueryError struct{ Reason string }

func (e *QueryError) Error() string { return e.Reason }

func qerr(format string, a ...any) error { return &QueryError{fmt.Sprintf(format, a...)} }

// Limits of AWS's query language.
const (
	MaxTerms           = 12
	MaxLeadingWildcard = 1
	maxLeadingQueryLen = 100
	maxQueryLen        = 4096
)

type tokKind int

const (
	tWord tokKind = iota
	tPhrase
	tLParen
	tRParen
	tLBrack
	tRBrack
	tLBrace
	tRBrace
	tColon
	tCmp
	tMinus
	tAnd
	tOr
	tNot
	tTo
	tEOF
)

type token struct {
	kind tokKind
	text string
	// escaped marks runes of a word that were escaped (never wildcards).
	pattern bool
}

// punctuation are the one-character tokens (tokKind 0, tWord, is none of them).
var punctuation = map[rune]tokKind{'(': tLParen, ')': tRParen, '[': tLBrack, ']': tRBrack, '{': tLBrace, '}': tRBrace, ':': tColon}

// unsupported are the characters AWS's query syntax refuses (outside phrases and escapes).
const unsupported = "`@#%/';,"

func tokenize(q string) ([]token, error) {
	var out []token
	rs := []rune(q)
	for i := 0; i < len(rs); {
		r := rs[i]
		switch {
		case unicode.IsSpace(r):
			i++
		case punctuation[r] != 0:
			out = append(out, token{kind: punctuation[r]})
			i++
		case r == '<' || r == '>':
			op := string(r)
			if i+1 < len(rs) && rs[i+1] == '=' {
				op += "="
			}
			out = append(out, token{kind: tCmp, text: op})
			i += len(op)
		case r == '"':
			var b strings.Builder
			j := i + 1
			for ; j < len(rs) && rs[j] != '"'; j++ {
				if rs[j] == '\\' && j+1 < len(rs) {
					j++
				}
				b.WriteRune(rs[j])
			}
			if j >= len(rs) {
				return nil, qerr("a phrase opened with \" is not closed")
			}
			out = append(out, token{kind: tPhrase, text: b.String()})
			i = j + 1
		case r == '-' && termStart(out) && i+1 < len(rs) && !unicode.IsSpace(rs[i+1]):
			out = append(out, token{kind: tMinus})
			i++
		case strings.ContainsRune(unsupported, r):
			return nil, qerr("the character %q is not allowed in a query (AWS's query syntax refuses ` @ # %% / ' ; ,)", r)
		default:
			var b strings.Builder
			pattern := false
			j := i
			for ; j < len(rs); j++ {
				c := rs[j]
				if c == '\\' {
					if j+1 >= len(rs) {
						return nil, qerr("a query cannot end with \\")
					}
					j++
					b.WriteRune('\\')
					b.WriteRune(rs[j])
					continue
				}
				if unicode.IsSpace(c) || strings.ContainsRune("()[]{}:\"<>", c) {
					break
				}
				if strings.ContainsRune(unsupported, c) {
					return nil, qerr("the character %q is not allowed in a query (AWS's query syntax refuses ` @ # %% / ' ; ,)", c)
				}
				if c == '*' || c == '?' {
					pattern = true
				}
				b.WriteRune(c)
			}
			w := b.String()
			switch w {
			case "AND", "&&":
				out = append(out, token{kind: tAnd})
			case "OR", "||":
				out = append(out, token{kind: tOr})
			case "NOT":
				out = append(out, token{kind: tNot})
			case "TO":
				out = append(out, token{kind: tTo, text: w})
			default:
				out = append(out, token{kind: tWord, text: w, pattern: pattern})
			}
			i = j
		}
	}
	return append(out, token{kind: tEOF}), nil
}

// termStart reports whether a hyphen here starts a term (exclusion) rather than a value.
func termStart(prev []token) bool {
	if len(prev) == 0 {
		return true
	}
	switch prev[len(prev)-1].kind {
	case tColon, tCmp, tLBrack, tLBrace, tTo:
		return false
	}
	return true
}

type parser struct {
	toks    []token
	pos     int
	terms   int
	leading int
}

// Parse reads a query in AWS's fleet indexing syntax.
func Parse(q string) (Node, error) {
	if strings.TrimSpace(q) == "" {
		return nil, qerr("the query is empty: use * to match every thing")
	}
	if len(q) > maxQueryLen {
		return nil, qerr("the query is longer than %d characters", maxQueryLen)
	}
	toks, err := tokenize(q)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	n, err := p.or("")
	if err != nil {
		return nil, err
	}
	if p.peek().kind != tEOF {
		return nil, qerr("unexpected %s in the query", p.describe(p.peek()))
	}
	if p.terms > MaxTerms {
		return nil, qerr("the query has %d terms; at most %d are allowed", p.terms, MaxTerms)
	}
	if p.leading > MaxLeadingWildcard {
		return nil, qerr("only one term of a query may start with a wildcard")
	}
	if p.leading > 0 && len(q) > maxLeadingQueryLen {
		return nil, qerr("a query with a leading wildcard may be at most %d characters long", maxLeadingQueryLen)
	}
	return n, nil
}

func (p *parser) peek() token { return p.toks[p.pos] }

// next consumes a token; at the end it keeps returning EOF.
func (p *parser) next() token {
	t := p.toks[p.pos]
	if t.kind != tEOF {
		p.pos++
	}
	return t
}

func (p *parser) describe(t token) string {
	switch t.kind {
	case tEOF:
		return "end of query"
	case tWord, tPhrase:
		return fmt.Sprintf("%q", t.text)
	}
	return map[tokKind]string{tLParen: "(", tRParen: ")", tLBrack: "[", tRBrack: "]", tLBrace: "{", tRBrace: "}",
		tColon: ":", tCmp: "comparison", tMinus: "-", tAnd: "AND", tOr: "OR", tNot: "NOT", tTo: "TO"}[t.kind]
}

// or parses a disjunction; field is the field of an enclosing field group ("" at top level).
func (p *parser) or(field string) (Node, error) {
	first, err := p.and(field)
	if err != nil {
		return nil, err
	}
	parts := []Node{first}
	for p.peek().kind == tOr {
		p.next()
		n, err := p.and(field)
		if err != nil {
			return nil, err
		}
		parts = append(parts, n)
	}
	if len(parts) == 1 {
		return first, nil
	}
	return Or{parts}, nil
}

func (p *parser) and(field string) (Node, error) {
	first, err := p.unary(field)
	if err != nil {
		return nil, err
	}
	parts := []Node{first}
	for {
		switch p.peek().kind {
		case tAnd:
			p.next()
		case tNot, tMinus, tWord, tPhrase, tLParen:
			// the default operator is AND; "a NOT b" is "a AND NOT b"
		default:
			if len(parts) == 1 {
				return first, nil
			}
			return And{parts}, nil
		}
		n, err := p.unary(field)
		if err != nil {
			return nil, err
		}
		parts = append(parts, n)
	}
}

func (p *parser) unary(field string) (Node, error) {
	switch p.peek().kind {
	case tNot, tMinus:
		p.next()
		n, err := p.unary(field)
		if err != nil {
			return nil, err
		}
		return Not{n}, nil
	}
	return p.primary(field)
}

func (p *parser) primary(field string) (Node, error) {
	t := p.next()
	switch t.kind {
	case tLParen:
		n, err := p.or(field)
		if err != nil {
			return nil, err
		}
		if c := p.next(); c.kind != tRParen {
			return nil, qerr("expected ) but found %s", p.describe(c))
		}
		return n, nil
	case tPhrase:
		p.terms++
		return Term{Field: field, Value: t.text}, nil
	case tWord:
		if field == "" {
			switch p.peek().kind {
			case tColon:
				p.next()
				return p.value(t.text)
			case tCmp:
				op := p.next().text
				v := p.next()
				if v.kind != tWord && v.kind != tPhrase {
					return nil, qerr("%s%s needs a value", t.text, op)
				}
				p.terms++
				return comparison(t.text, op, unescape(v.text)), nil
			}
		}
		return p.word(field, t)
	}
	return nil, qerr("unexpected %s in the query", p.describe(t))
}

// value parses what follows "field:".
func (p *parser) value(field string) (Node, error) {
	if err := checkField(field); err != nil {
		return nil, err
	}
	switch t := p.peek(); t.kind {
	case tLParen:
		p.next()
		n, err := p.or(field)
		if err != nil {
			return nil, err
		}
		if c := p.next(); c.kind != tRParen {
			return nil, qerr("expected ) but found %s", p.describe(c))
		}
		return n, nil
	case tLBrack, tLBrace:
		p.next()
		lo := p.next()
		if to := p.next(); to.kind != tTo {
			return nil, qerr("a range is written [LOW TO HIGH]")
		}
		hi := p.next()
		end := p.next()
		if (lo.kind != tWord && lo.kind != tPhrase) || (hi.kind != tWord && hi.kind != tPhrase) || (end.kind != tRBrack && end.kind != tRBrace) {
			return nil, qerr("a range is written [LOW TO HIGH] ({ } for exclusive bounds)")
		}
		p.terms++
		r := Range{Field: field, LoIncl: t.kind == tLBrack, HiIncl: end.kind == tRBrack}
		if lo.text != "*" || lo.kind == tPhrase {
			v := unescape(lo.text)
			r.Lo = &v
		}
		if hi.text != "*" || hi.kind == tPhrase {
			v := unescape(hi.text)
			r.Hi = &v
		}
		return r, nil
	case tPhrase:
		p.next()
		p.terms++
		return Term{Field: field, Value: t.text}, nil
	case tWord:
		p.next()
		return p.word(field, t)
	}
	return nil, qerr("%s: needs a value", field)
}

func (p *parser) word(field string, t token) (Node, error) {
	p.terms++
	if t.pattern {
		if strings.HasPrefix(t.text, "*") || strings.HasPrefix(t.text, "?") {
			if t.text != "*" {
				p.leading++
			}
		}
		return Term{Field: field, Value: t.text, Pattern: true}, nil
	}
	return Term{Field: field, Value: unescape(t.text)}, nil
}

func comparison(field, op, v string) Node {
	switch op {
	case ">":
		return Range{Field: field, Lo: &v}
	case ">=":
		return Range{Field: field, Lo: &v, LoIncl: true}
	case "<":
		return Range{Field: field, Hi: &v}
	}
	return Range{Field: field, Hi: &v, HiIncl: true}
}

func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		if rs[i] == '\\' && i+1 < len(rs) {
			i++
		}
		b.WriteRune(rs[i])
	}
	return b.String()
}

func checkField(f string) error {
	if f == "" || strings.HasPrefix(f, ".") || strings.HasSuffix(f, ".") || strings.Contains(f, "..") {
		return qerr("%q is not a field name", f)
	}
	return nil
}

// matchPattern matches s against a pattern of * (any run) and ? (one character); escaped
// characters (\*) are literal. Both are lower case.
func matchPattern(pattern, s string) bool {
	p, r := []rune(pattern), []rune(s)
	var match func(i, j int) bool
	memo := map[[2]int]bool{}
	match = func(i, j int) bool {
		if v, ok := memo[[2]int{i, j}]; ok {
			return v
		}
		var res bool
		switch {
		case i == len(p):
			res = j == len(r)
		case p[i] == '*':
			res = match(i+1, j) || (j < len(r) && match(i, j+1))
		case p[i] == '\\' && i+1 < len(p):
			res = j < len(r) && r[j] == p[i+1] && match(i+2, j+1)
		case p[i] == '?':
			res = j < len(r) && match(i+1, j+1)
		default:
			res = j < len(r) && r[j] == p[i] && match(i+1, j+1)
		}
		memo[[2]int{i, j}] = res
		return res
	}
	return match(0, 0)
}
