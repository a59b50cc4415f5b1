package localiot_test

import (
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/broker"
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/pki"
)

// A claim that never provisions leaves nothing behind: after the token's hour its token and
// the certificate made for it are gone (the certificate onto the revocation list), and the
// token no longer provisions.
func TestUnfinishedClaimsAreSwept(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.Open(filepath.Join(dir, "ca"))
	require.NoError(t, err)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	svc, err := localiot.Open(localiot.Options{Path: filepath.Join(dir, "jobs.db"), Logger: zerolog.Nop(), CA: ca, Now: clock, TrustLocalClock: true})
	require.NoError(t, err)
	defer svc.Close()
	topic, reply := svc.HandleProvisioningRequest(broker.TopicCreateCertificate, []byte("{}"))
	require.Equal(t, broker.TopicCreateCertificate+"/accepted", topic, string(reply))
	var created struct{ CertificateID, CertificateOwnershipToken string }
	require.NoError(t, json.Unmarshal(reply, &created))
	c, err := svc.DescribeCertificate(created.CertificateID)
	require.NoError(t, err)
	require.Equal(t, localiot.CertPendingActivation, c.Status)

	svc.SweepClaims()
	_, err = svc.DescribeCertificate(created.CertificateID)
	require.NoError(t, err, "within the hour it stays")

	mu.Lock()
	now = now.Add(localiot.OwnershipTokenTTL + time.Minute)
	mu.Unlock()
	svc.SweepClaims()
	_, err = svc.DescribeCertificate(created.CertificateID)
	require.ErrorContains(t, err, "does not exist")
	_, _, err = svc.RegisterThingFromClaim("any", created.CertificateOwnershipToken, nil)
	require.ErrorContains(t, err, "not valid")
}
