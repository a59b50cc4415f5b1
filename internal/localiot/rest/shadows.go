package rest

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/otaflow/otaflow/internal/localiot"
)

func (s api) handleGetThingShadow(r *http.Request) (any, error) {
	doc, err := s.GetShadow(r.PathValue("thingName"), shadowNameParam(r))
	if err != nil {
		return nil, err
	}
	return doc, nil
}

func (s api) handleUpdateThingShadow(r *http.Request) (any, error) {
	var raw json.RawMessage
	if err := readJSON(r, &raw); err != nil {
		return nil, err
	}
	doc, err := s.UpdateShadow(r.PathValue("thingName"), shadowNameParam(r), raw)
	if err != nil {
		return nil, err
	}
	return doc, nil
}

// shadowNameParam is the ?name= of a shadow request; without it, the classic (unnamed) shadow.
func shadowNameParam(r *http.Request) string { return r.URL.Query().Get("name") }

func (s api) handleDeleteThingShadow(r *http.Request) (any, error) {
	return s.DeleteShadow(r.PathValue("thingName"), shadowNameParam(r))
}

func (s api) handleListNamedShadowsForThing(r *http.Request) (any, error) {
	names, err := s.ListNamedShadows(r.PathValue("thingName"))
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	size := 25
	if v := q.Get("pageSize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return nil, localiot.Errorf(localiot.CodeInvalidRequest, "pageSize must be a number from 1 to 100")
		}
		size = n
	}
	page, next := localiot.PageStrings(names, size, q.Get("nextToken"))
	out := map[string]any{"results": append([]string{}, page...), "timestamp": s.Clock().Unix()}
	if next != "" {
		out["nextToken"] = next
	}
	return out, nil
}
