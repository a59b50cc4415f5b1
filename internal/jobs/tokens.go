package jobs

import (
	bolt "go.etcd.io/bbolt"
)

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
	err := s.st.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTokens)
		ok, err := getJSON(b, []byte(token), &out)
		if err != nil || ok {
			return err
		}
		out = TokenRecord{Fingerprint: fingerprint, Value: value}
		return putJSON(b, []byte(token), out)
	})
	return out, err
}
