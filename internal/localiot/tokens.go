package localiot

// TokenRecord is what an idempotency token was first used for.
type TokenRecord struct {
	// Fingerprint identifies the request the token came with.
	Fingerprint string `json:"fingerprint"`
	// Value is what the request created (e.g. a rollout ID).
	Value string `json:"value"`
}

// ClaimToken records that token was used for a request with fingerprint creating value, and
// returns the record now stored: the new one, or the one from the token's first use. The
// caller compares fingerprints: the same token with a different request is a conflict.
func (s *Service) ClaimToken(token, fingerprint, value string) (TokenRecord, error) {
	var out TokenRecord
	err := s.st.Update(func(t Tx) error {
		existing, err := t.token(token)
		if err != nil || existing != nil {
			if existing != nil {
				out = *existing
			}
			return err
		}
		out = TokenRecord{Fingerprint: fingerprint, Value: value}
		return t.putToken(token, out)
	})
	return out, err
}
