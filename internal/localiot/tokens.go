package localiot

import "github.com/otaflow/otaflow/internal/localiot/store"

// ClaimToken records that token was used for a request with fingerprint creating value, and
// returns the record now stored: the new one, or the one from the token's first use. The
// caller compares fingerprints: the same token with a different request is a conflict.
func (s *Service) ClaimToken(token, fingerprint, value string) (store.TokenRecord, error) {
	var out store.TokenRecord
	err := s.st.Update(func(t store.Tx) error {
		existing, err := t.Token(token)
		if err != nil || existing != nil {
			if existing != nil {
				out = *existing
			}
			return err
		}
		out = store.TokenRecord{Fingerprint: fingerprint, Value: value}
		return t.PutToken(token, out)
	})
	return out, err
}
