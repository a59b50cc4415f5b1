package rest

import (
	"encoding/json"
	"net/http"
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

// shadowNameParam is the ?name= of a shadow request; otaflow keeps no classic (unnamed) shadow.
func shadowNameParam(r *http.Request) string { return r.URL.Query().Get("name") }
