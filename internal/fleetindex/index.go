package fleetindex

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Doc is one thing as the index sees it.
type Doc struct {
	ThingName     string
	ThingID       string
	ThingTypeName string
	Attributes    map[string]string
	Groups        []string
	// Connected and ConnectedAt are its connectivity, when indexed and known.
	Connected   *bool
	ConnectedAt int64 // epoch milliseconds
	// Shadows holds each named shadow's reported and desired state.
	Shadows map[string]Shadow
}

// Shadow is a named shadow's state.
type Shadow struct {
	Reported map[string]any
	Desired  map[string]any
	Version  int64
}

// Index is the fleet index: every thing's fields, and for every field the things that hold
// each of its values (postings). Safe for concurrent use.
type Index struct {
	mu   sync.RWMutex
	docs map[string]*entry
	post map[string]map[string]map[string]struct{} // field → value → things
	// cols are every field's values by thing, nums the first numeric value: what the
	// aggregations read, one lookup per matched thing.
	cols map[string]map[string][]string
	nums map[string]map[string]float64
	// names are the things in name order, for paging through every thing without sorting
	// them at each page; nil when a thing came or went since (sortedMu guards rebuilding it).
	names    []string
	sortedMu sync.Mutex
}

type entry struct {
	doc    Doc
	fields map[string][]string
}

// New returns an empty index.
func New() *Index {
	return &Index{docs: map[string]*entry{}, post: map[string]map[string]map[string]struct{}{},
		cols: map[string]map[string][]string{}, nums: map[string]map[string]float64{}}
}

// Len is how many things the index holds.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.docs)
}

// Put adds or replaces a thing.
func (ix *Index) Put(d Doc) {
	e := &entry{doc: d, fields: flatten(d)}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if old, ok := ix.docs[d.ThingName]; ok {
		ix.unpost(d.ThingName, old)
	} else {
		ix.names = nil
	}
	ix.docs[d.ThingName] = e
	for f, vals := range e.fields {
		col := ix.cols[f]
		if col == nil {
			col = map[string][]string{}
			ix.cols[f] = col
		}
		col[d.ThingName] = vals
		for _, v := range vals {
			if n, err := strconv.ParseFloat(v, 64); err == nil {
				num := ix.nums[f]
				if num == nil {
					num = map[string]float64{}
					ix.nums[f] = num
				}
				num[d.ThingName] = n
				break
			}
		}
		byVal := ix.post[f]
		if byVal == nil {
			byVal = map[string]map[string]struct{}{}
			ix.post[f] = byVal
		}
		for _, v := range vals {
			set := byVal[v]
			if set == nil {
				set = map[string]struct{}{}
				byVal[v] = set
			}
			set[d.ThingName] = struct{}{}
		}
	}
}

// Delete removes a thing.
func (ix *Index) Delete(name string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if old, ok := ix.docs[name]; ok {
		ix.unpost(name, old)
		delete(ix.docs, name)
		ix.names = nil
	}
}

func (ix *Index) unpost(name string, e *entry) {
	for f, vals := range e.fields {
		delete(ix.cols[f], name)
		if len(ix.cols[f]) == 0 {
			delete(ix.cols, f)
		}
		delete(ix.nums[f], name)
		if len(ix.nums[f]) == 0 {
			delete(ix.nums, f)
		}
		for _, v := range vals {
			if set := ix.post[f][v]; set != nil {
				delete(set, name)
				if len(set) == 0 {
					delete(ix.post[f], v)
				}
			}
		}
		if len(ix.post[f]) == 0 {
			delete(ix.post, f)
		}
	}
}

// norm is a value as the index keeps it: lower case; numbers in one canonical form.
func norm(v string) string {
	if f, err := strconv.ParseFloat(v, 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return strings.ToLower(v)
}

func flatten(d Doc) map[string][]string {
	f := map[string][]string{}
	add := func(field, v string) { f[field] = append(f[field], norm(v)) }
	add("thingName", d.ThingName)
	if d.ThingID != "" {
		add("thingId", d.ThingID)
	}
	if d.ThingTypeName != "" {
		add("thingTypeName", d.ThingTypeName)
	}
	for k, v := range d.Attributes {
		add("attributes."+k, v)
	}
	for _, g := range d.Groups {
		add("thingGroupNames", g)
	}
	if d.Connected != nil {
		add("connectivity.connected", strconv.FormatBool(*d.Connected))
		add("connectivity.timestamp", strconv.FormatInt(d.ConnectedAt, 10))
	}
	for name, sh := range d.Shadows {
		flattenJSON(f, "shadow.name."+name+".reported", sh.Reported)
		flattenJSON(f, "shadow.name."+name+".desired", sh.Desired)
	}
	return f
}

func flattenJSON(f map[string][]string, prefix string, v any) {
	switch v := v.(type) {
	case nil:
	case map[string]any:
		for k, sub := range v {
			flattenJSON(f, prefix+"."+k, sub)
		}
	case []any:
		for _, sub := range v {
			flattenJSON(f, prefix, sub)
		}
	case string:
		f[prefix] = append(f[prefix], norm(v))
	case float64:
		f[prefix] = append(f[prefix], strconv.FormatFloat(v, 'f', -1, 64))
	case json.Number:
		f[prefix] = append(f[prefix], norm(v.String()))
	case bool:
		f[prefix] = append(f[prefix], strconv.FormatBool(v))
	default:
		f[prefix] = append(f[prefix], norm(fmt.Sprint(v)))
	}
}

type set = map[string]struct{}

// match evaluates n against the postings (callers hold the read lock).
func (ix *Index) match(n Node) set {
	switch n := n.(type) {
	case And:
		out := set{}
		ix.each(n, func(k string) { out[k] = struct{}{} })
		return out
	case Or:
		out := set{}
		for _, p := range n.Parts {
			for k := range ix.match(p) {
				out[k] = struct{}{}
			}
		}
		return out
	case Not:
		out := ix.all()
		for k := range ix.match(n.Part) {
			delete(out, k)
		}
		return out
	case Term:
		return ix.term(n)
	case Range:
		return ix.rangeOf(n)
	}
	return set{}
}

// each calls fn with every thing n matches. An AND materializes only the part likely to match
// least and tests the others thing by thing (no intermediate sets).
func (ix *Index) each(n Node, fn func(string)) {
	and, ok := n.(And)
	if !ok {
		for k := range ix.match(n) {
			fn(k)
		}
		return
	}
	best, size := -1, 0
	for i, p := range and.Parts {
		if est, ok := ix.estimate(p); ok && (best < 0 || est < size) {
			best, size = i, est
		}
	}
	var base set
	if best < 0 {
		base = ix.all()
	} else {
		base = ix.match(and.Parts[best])
	}
	tests := make([]func(string) bool, 0, len(and.Parts))
	for i, p := range and.Parts {
		if i != best {
			tests = append(tests, ix.member(p))
		}
	}
things:
	for k := range base {
		for _, test := range tests {
			if !test(k) {
				continue things
			}
		}
		fn(k)
	}
}

// estimate is how many things n matches at most, when that is cheap to tell (a NOT is not:
// it is best tested, not materialized).
func (ix *Index) estimate(n Node) (int, bool) {
	switch n := n.(type) {
	case Term:
		if n.Field != "" && !n.Pattern {
			return len(ix.post[n.Field][norm(n.Value)]), true
		}
		if n.Field != "" {
			return len(ix.cols[n.Field]), true
		}
		return len(ix.docs), true
	case Range:
		if n.Field != "" {
			return len(ix.cols[n.Field]), true
		}
		return len(ix.docs), true
	case Or:
		sum := 0
		for _, p := range n.Parts {
			e, ok := ix.estimate(p)
			if !ok {
				return 0, false
			}
			sum += e
		}
		return sum, true
	case And:
		best, found := 0, false
		for _, p := range n.Parts {
			if e, ok := ix.estimate(p); ok && (!found || e < best) {
				best, found = e, true
			}
		}
		return best, found
	}
	return 0, false
}

// member is a test of whether a thing matches n, without building the set of all that do.
func (ix *Index) member(n Node) func(string) bool {
	switch n := n.(type) {
	case Term:
		if n.Field != "" && !n.Pattern {
			things := ix.post[n.Field][norm(n.Value)]
			return func(k string) bool { _, ok := things[k]; return ok }
		}
		if n.Field != "" {
			col, pat, any := ix.cols[n.Field], strings.ToLower(n.Value), n.Value == "*"
			return func(k string) bool {
				for _, v := range col[k] {
					if any || matchPattern(pat, v) {
						return true
					}
				}
				return false
			}
		}
	case Range:
		if n.Field != "" {
			col := ix.cols[n.Field]
			return func(k string) bool {
				for _, v := range col[k] {
					if n.holds(v) {
						return true
					}
				}
				return false
			}
		}
	case Or:
		tests := make([]func(string) bool, len(n.Parts))
		for i, p := range n.Parts {
			tests[i] = ix.member(p)
		}
		return func(k string) bool {
			for _, t := range tests {
				if t(k) {
					return true
				}
			}
			return false
		}
	case Not:
		t := ix.member(n.Part)
		return func(k string) bool { return !t(k) }
	case And:
		tests := make([]func(string) bool, len(n.Parts))
		for i, p := range n.Parts {
			tests[i] = ix.member(p)
		}
		return func(k string) bool {
			for _, t := range tests {
				if !t(k) {
					return false
				}
			}
			return true
		}
	}
	s := ix.match(n) // a term of every field: materialize once
	return func(k string) bool { _, ok := s[k]; return ok }
}

func (ix *Index) all() set {
	out := make(set, len(ix.docs))
	for k := range ix.docs {
		out[k] = struct{}{}
	}
	return out
}

// fieldsFor is the fields a term searches: its own, or every field.
func (ix *Index) fieldsFor(field string) []string {
	if field != "" {
		return []string{field}
	}
	out := make([]string, 0, len(ix.post))
	for f := range ix.post {
		out = append(out, f)
	}
	return out
}

func (ix *Index) term(t Term) set {
	if t.Pattern && t.Value == "*" {
		if t.Field == "" {
			return ix.all()
		}
		out := set{}
		for _, things := range ix.post[t.Field] {
			for k := range things {
				out[k] = struct{}{}
			}
		}
		return out
	}
	out := set{}
	for _, f := range ix.fieldsFor(t.Field) {
		byVal := ix.post[f]
		if !t.Pattern {
			for k := range byVal[norm(t.Value)] {
				out[k] = struct{}{}
			}
			continue
		}
		pat := strings.ToLower(t.Value)
		for v, things := range byVal {
			if matchPattern(pat, v) {
				for k := range things {
					out[k] = struct{}{}
				}
			}
		}
	}
	return out
}

// compare orders two values: numerically when both are numbers, else as strings.
func compare(a, b string) int {
	fa, ea := strconv.ParseFloat(a, 64)
	fb, eb := strconv.ParseFloat(b, 64)
	if ea == nil && eb == nil {
		switch {
		case fa < fb:
			return -1
		case fa > fb:
			return 1
		}
		return 0
	}
	return strings.Compare(a, b)
}

func (r Range) holds(v string) bool {
	if r.Lo != nil {
		c := compare(v, norm(*r.Lo))
		if c < 0 || (c == 0 && !r.LoIncl) {
			return false
		}
	}
	if r.Hi != nil {
		c := compare(v, norm(*r.Hi))
		if c > 0 || (c == 0 && !r.HiIncl) {
			return false
		}
	}
	return true
}

func (ix *Index) rangeOf(r Range) set {
	out := set{}
	for _, f := range ix.fieldsFor(r.Field) {
		for v, things := range ix.post[f] {
			if r.holds(v) {
				for k := range things {
					out[k] = struct{}{}
				}
			}
		}
	}
	return out
}

// Search returns the things a query matches, in name order, after the thing named after
// (exclusive; "" from the start), at most max of them, and whether more follow.
func (ix *Index) Search(q Node, after string, max int) ([]Doc, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if matchesAll(q) {
		// Every thing, a page at a time: from the sorted names, not a sort per page.
		sorted := ix.sortedNames()
		i, _ := slices.BinarySearch(sorted, after)
		if i < len(sorted) && sorted[i] == after {
			i++
		}
		end := min(i+max, len(sorted))
		out := make([]Doc, 0, end-i)
		for _, n := range sorted[i:end] {
			out = append(out, ix.docs[n].doc)
		}
		return out, end < len(sorted)
	}
	hits := ix.match(q)
	names := make([]string, 0, len(hits))
	for k := range hits {
		if k > after {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	more := len(names) > max
	if more {
		names = names[:max]
	}
	out := make([]Doc, len(names))
	for i, n := range names {
		out[i] = ix.docs[n].doc
	}
	return out, more
}

// matchesAll reports whether q matches every thing (* or thingName:*).
func matchesAll(q Node) bool {
	t, ok := q.(Term)
	return ok && t.Pattern && t.Value == "*" && (t.Field == "" || t.Field == "thingName")
}

// sortedNames are the things in name order (callers hold the read lock).
func (ix *Index) sortedNames() []string {
	ix.sortedMu.Lock()
	defer ix.sortedMu.Unlock()
	if ix.names == nil {
		ix.names = slices.Sorted(maps.Keys(ix.docs))
	}
	return ix.names
}

// count is how many things q matches when that needs no scan (every thing, or one value of
// one field), and whether it could tell.
func (ix *Index) count(q Node) (int, bool) {
	if matchesAll(q) {
		return len(ix.docs), true
	}
	if t, ok := q.(Term); ok && t.Field != "" && !t.Pattern {
		return len(ix.post[t.Field][norm(t.Value)]), true
	}
	return 0, false
}

// Count is how many things a query matches.
func (ix *Index) Count(q Node) int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if n, ok := ix.count(q); ok {
		return n
	}
	n := 0
	ix.each(q, func(string) { n++ })
	return n
}

// values returns the values of field held by the things q matches (one list per thing).
func (ix *Index) values(q Node, field string) [][]string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	col := ix.cols[field]
	var out [][]string
	ix.each(q, func(k string) {
		if vs, ok := col[k]; ok {
			out = append(out, vs)
		}
	})
	return out
}

// numbers returns field's numeric values over the things q matches, and how many of them
// hold the field at all.
func (ix *Index) numbers(q Node, field string) ([]float64, int) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	col, num := ix.cols[field], ix.nums[field]
	var out []float64
	n := 0
	ix.each(q, func(k string) {
		if _, ok := col[k]; !ok {
			return
		}
		n++
		if v, ok := num[k]; ok {
			out = append(out, v)
		}
	})
	return out, n
}

// Statistics are GetStatistics' figures. For a field that is not a number only Count is set.
type Statistics struct {
	Count                                                                int
	Numeric                                                              bool
	Average, Sum, Minimum, Maximum, SumOfSquares, Variance, StdDeviation float64
}

// Stats aggregates field over the things q matches: count of things with a value, and for
// numbers, the moments AWS returns (population variance).
func (ix *Index) Stats(q Node, field string, numeric bool) Statistics {
	var st Statistics
	if !numeric {
		ix.mu.RLock()
		n, ok := ix.count(q)
		switch {
		case ok && field == "thingName":
			st.Count = n // every thing has a name
		case matchesAll(q):
			st.Count = len(ix.cols[field]) // the things that hold the field
		default:
			ok = false
		}
		ix.mu.RUnlock()
		if !ok {
			st.Count = len(ix.values(q, field))
		}
		return st
	}
	nums, n := ix.numbers(q, field)
	st.Count = n
	if len(nums) == 0 {
		return st
	}
	st.Numeric, st.Count = true, len(nums)
	st.Minimum, st.Maximum = nums[0], nums[0]
	for _, f := range nums {
		st.Sum += f
		st.SumOfSquares += f * f
		st.Minimum, st.Maximum = math.Min(st.Minimum, f), math.Max(st.Maximum, f)
	}
	c := float64(len(nums))
	st.Average = st.Sum / c
	st.Variance = math.Max(st.SumOfSquares/c-st.Average*st.Average, 0)
	st.StdDeviation = math.Sqrt(st.Variance)
	return st
}

// Percentiles are the values of a numeric field at each percent (linear interpolation
// between the closest ranks), over the things q matches.
func (ix *Index) Percentiles(q Node, field string, percents []float64) map[float64]float64 {
	nums, _ := ix.numbers(q, field)
	out := map[float64]float64{}
	if len(nums) == 0 {
		return out
	}
	slices.Sort(nums)
	for _, p := range percents {
		rank := p / 100 * float64(len(nums)-1)
		lo := int(math.Floor(rank))
		hi := min(lo+1, len(nums)-1)
		out[p] = nums[lo] + (nums[hi]-nums[lo])*(rank-float64(lo))
	}
	return out
}

// Cardinality is how many distinct values field has over the things q matches.
func (ix *Index) Cardinality(q Node, field string) int {
	seen := map[string]struct{}{}
	for _, vs := range ix.values(q, field) {
		for _, v := range vs {
			seen[v] = struct{}{}
		}
	}
	return len(seen)
}

// Bucket is one value of a field and how many matched things hold it.
type Bucket struct {
	Key   string
	Count int
}

// Buckets are the most common values of field over the things q matches, most common first.
func (ix *Index) Buckets(q Node, field string, max int) []Bucket {
	counts := map[string]int{}
	if matchesAll(q) {
		// Over every thing: the postings hold each value's things already.
		ix.mu.RLock()
		for v, things := range ix.post[field] {
			if len(things) > 0 {
				counts[v] = len(things)
			}
		}
		ix.mu.RUnlock()
	} else {
		for _, vs := range ix.values(q, field) {
			for _, v := range slices.Compact(slices.Sorted(slices.Values(vs))) {
				counts[v]++
			}
		}
	}
	out := make([]Bucket, 0, len(counts))
	for k, c := range counts {
		out = append(out, Bucket{k, c})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Key < out[j].Key
	})
	if len(out) > max {
		out = out[:max]
	}
	return out
}

// Matches reports whether the thing named name is indexed and q matches it (a dynamic thing
// group's membership test).
func (ix *Index) Matches(q Node, name string) bool {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if _, ok := ix.docs[name]; !ok {
		return false
	}
	return ix.member(q)(name)
}

// Names are the things q matches, in name order.
func (ix *Index) Names(q Node) []string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var out []string
	ix.each(q, func(k string) { out = append(out, k) })
	sort.Strings(out)
	return out
}
