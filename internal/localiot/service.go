package localiot

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/otaflow/otaflow/internal/arn"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

// Options configure a Service.
type Options struct {
	// Path of the bbolt database file (the embedded store).
	Path string
	// PostgresURL, when set, keeps the state in PostgreSQL instead (postgres://…), so that
	// several replicas serve one fleet; Path is then not used.
	PostgresURL string
	// ArtifactDir holds uploaded artifacts and TUF metadata (default: "artifacts" beside
	// Path). Replicas share it (a shared volume). Required with PostgresURL.
	ArtifactDir string
	// Region and Account appear in ARNs.
	Region  string
	Account string
	Logger  zerolog.Logger
	// Now is this machine's clock; tests may replace it. On PostgreSQL the service corrects
	// it to the database's clock (clock.go), unless TrustLocalClock.
	Now func() time.Time
	// TrustLocalClock decides time on Now alone, even on a shared store: for tests whose
	// clock is fake.
	TrustLocalClock bool
	// SweepInterval is how often overdue executions are timed out (default 1 s).
	SweepInterval time.Duration
	// BaseURL is this service's address as devices reach it, for presigned artifact URLs.
	BaseURL string
	// NoAWSQuotas lifts the AWS IoT quotas the service enforces by default (quotas.go), for
	// users who only ever run locally. With them, what works here works on AWS.
	NoAWSQuotas bool
	// CA, when set, is the devices' certificate authority: it issues certificates
	// (CreateKeysAndCertificate, CreateCertificateFromCsr) and vouches for registered ones.
	CA Issuer
	// CRLFile, with CA, is where the service keeps a certificate revocation list of the
	// certificates that may not connect (INACTIVE, REVOKED, not yet provisioned), written at
	// start and at every change, for a broker that does not ask the registry (mosquitto's
	// crlfile); CRLReload then runs (e.g. to signal mosquitto to reload it).
	CRLFile   string
	CRLReload []string
	// FleetIndexing turns thing indexing on (registry, and the otaflow and health named
	// shadows) when the store holds no indexing configuration yet; AWS starts with it off.
	FleetIndexing bool
}

// Service holds the jobs state and the operations both planes share.
type Service struct {
	// st is the store as the service uses it (indexingStore); raw is the store itself.
	st      store.Store
	raw     store.Store
	region  string
	account string
	log     zerolog.Logger
	now     func() time.Time
	// clockOffset is the database's clock minus this machine's, in nanoseconds (clock.go).
	clockOffset atomic.Int64
	// keys are recent access-key lookups (access.go).
	keys keyCache
	// auditRefused bounds the refused, unauthenticated attempts recorded; auditQ holds the
	// entries not yet committed (audit.go).
	auditRefused auditLimiter
	auditQ       auditQueue

	mu        sync.RWMutex
	listeners []QueueListener
	// certListeners are told of certificates that stopped being usable (certificates.go).
	certListeners []func(id string)
	// ca issues device certificates (Options.CA); nil: none are issued.
	ca Issuer
	// crlFile and crlReload keep a revocation list for mosquitto (Options.CRLFile).
	crlFile   string
	crlReload []string
	crlMu     sync.Mutex
	// dynamic are the dynamic thing groups (dynamicgroups.go).
	dynamic dynamicGroups
	// later are things to notify at the next sweep (notifyLater).
	later []string
	// shared: the store is shared by replicas; unsettledJobs are the jobs whose executions
	// this replica moved since the last sweep (settleJobs).
	shared        bool
	unsettledJobs map[string]struct{}

	stopSweep chan struct{}
	closeOnce sync.Once
	swept     sync.WaitGroup

	artifacts  string
	tufMu      sync.Mutex // one release metadata upload at a time (check, then write)
	baseURL    string
	presignKey []byte
	quotas     bool
	calls      sync.Map // operation → *atomic.Int64 (APICalls)
	index      fleetIndex
}

// MaxDocumentBytes is AWS IoT's limit on a job document.
const MaxDocumentBytes = 32 * 1024

// Open opens (or creates) the jobs database.
func Open(o Options) (*Service, error) {
	if o.Region == "" {
		o.Region = "us-east-1"
	}
	if o.Account == "" {
		o.Account = "000000000000"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	var st store.Store
	var err error
	switch {
	case o.PostgresURL != "":
		if o.ArtifactDir == "" {
			return nil, fmt.Errorf("a jobs service on PostgreSQL needs an artifact directory that every replica shares (--artifact-dir)")
		}
		st, err = store.OpenPostgres(o.PostgresURL)
	case o.Path == "":
		return nil, fmt.Errorf("jobs service: give a database file (Path) or a PostgreSQL URL")
	default:
		st, err = store.OpenBolt(o.Path)
		if o.ArtifactDir == "" {
			o.ArtifactDir = filepath.Join(filepath.Dir(o.Path), "artifacts")
		}
	}
	if err != nil {
		return nil, err
	}
	s := &Service{region: o.Region, account: o.Account, log: o.Logger, now: o.Now, stopSweep: make(chan struct{}),
		artifacts: o.ArtifactDir, baseURL: o.BaseURL, quotas: !o.NoAWSQuotas, ca: o.CA,
		crlFile: o.CRLFile, crlReload: o.CRLReload}
	s.st, s.raw = indexingStore{Store: st, s: s}, st
	_, s.shared = s.Shared()
	if s.presignKey, err = s.loadPresignSecret(); err != nil {
		st.Close()
		return nil, fmt.Errorf("artifact signing key: %w", err)
	}
	s.listenForChanges()
	if err := s.loadIndex(o.FleetIndexing); err != nil {
		s.stopListening()
		st.Close()
		return nil, err
	}
	if _, shared := s.Shared(); shared && !o.TrustLocalClock {
		if err := s.measureClock(); err != nil {
			s.log.Warn().Err(err).Msg("could not read the database's clock; using this machine's until it can")
		}
		s.swept.Add(1)
		go s.trackClock()
	}
	if err := s.loadDynamic(); err != nil {
		s.stopListening()
		st.Close()
		return nil, err
	}
	if err := s.WriteCRL(); err != nil {
		close(s.stopSweep)
		s.swept.Wait()
		s.stopListening()
		st.Close()
		return nil, fmt.Errorf("--crl-file: %w", err)
	}
	s.swept.Add(1)
	go s.sweepLoop(o.SweepInterval)
	s.swept.Add(1)
	go s.every(time.Minute, s.failUnfinishedTasks) // bulk registrations a stopped replica left
	s.auditQ.cond, s.auditQ.wake = sync.NewCond(&s.auditQ.mu), make(chan struct{}, 1)
	s.swept.Add(1)
	go s.runAuditWriter()
	if s.ca != nil {
		s.swept.Add(1)
		go s.every(time.Minute, s.SweepClaims)
	}
	return s, nil
}

// Healthy reports whether the store answers a read.
func (s *Service) Healthy() error {
	return s.st.View(func(t store.Tx) error {
		_, err := t.Thing("")
		return err
	})
}

// SetBaseURL sets the address devices reach this service at, once it is listening.
func (s *Service) SetBaseURL(u string) { s.baseURL = u }

// Close stops the timeout sweeper and closes the database.
func (s *Service) Close() error {
	err := errors.New("jobs service already closed")
	s.closeOnce.Do(func() {
		s.stopListening()
		close(s.stopSweep)
		s.swept.Wait()
		err = s.st.Close()
	})
	return err
}

// QueueListener is told of changes to things' pending jobs, after they are durable. The MQTT
// plane is one: it sends notify and notify-next.
type QueueListener interface {
	// Changed: these things' pending jobs changed.
	Changed(things []string)
	// Started: the thing's execution (ExecutionKey) went from QUEUED to IN_PROGRESS, and
	// nothing else changed with it. Its pending list kept its members; its next execution
	// changed only if that execution was not the next one before.
	Started(thing, execution string)
}

// OnQueueChange registers l to be told which things' pending jobs changed.
func (s *Service) OnQueueChange(l QueueListener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listeners = append(s.listeners, l)
}

func (s *Service) queueChanged(things []string) {
	if len(things) == 0 {
		return
	}
	s.mu.RLock()
	ls := s.listeners
	s.mu.RUnlock()
	for _, l := range ls {
		l.Changed(things)
	}
}

// queueStarted tells listeners that a device started e, which was QUEUED. On a shared store
// another replica may have told the thing of changes this one's listeners never saw, so they
// are told of a change instead, to read what is pending afresh.
func (s *Service) queueStarted(e *store.Execution) {
	if s.shared {
		s.queueChanged([]string{e.ThingName})
		return
	}
	s.mu.RLock()
	ls := s.listeners
	s.mu.RUnlock()
	for _, l := range ls {
		l.Started(e.ThingName, ExecutionKey(e))
	}
}

// ThingArn is the ARN of a thing in this service's region and account.
func (s *Service) ThingArn(name string) string {
	return arn.IoT(s.region, s.account, arn.TypeThing, name)
}

// JobArn is the ARN of a job in this service's region and account.
func (s *Service) JobArn(id string) string {
	return arn.IoT(s.region, s.account, arn.TypeJob, id)
}

// viewOne loads one record in a read transaction; a missing record is notFound.
func viewOne[T any](s *Service, load func(store.Tx) (*T, error), notFound *Error) (*T, error) {
	var out *T
	err := s.st.View(func(t store.Tx) error {
		v, err := load(t)
		if err != nil {
			return err
		}
		if v == nil {
			return notFound
		}
		out = v
		return nil
	})
	return out, err
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// Counter is the count of calls of operation op (a REST route, or "mqtt get" and the like).
func (s *Service) Counter(op string) *atomic.Int64 {
	v, ok := s.calls.Load(op)
	if !ok {
		v, _ = s.calls.LoadOrStore(op, new(atomic.Int64))
	}
	return v.(*atomic.Int64)
}

// APICalls counts the control-plane requests served so far, by operation ("PUT /jobs/{jobId}"),
// and the device requests over MQTT ("mqtt get", "mqtt update", ...): what a benchmark divides
// by the fleet size.
func (s *Service) APICalls() map[string]int64 {
	out := map[string]int64{}
	s.calls.Range(func(k, v any) bool {
		if n := v.(*atomic.Int64).Load(); n > 0 {
			out[k.(string)] = n
		}
		return true
	})
	return out
}

// Logger is the service's logger.
func (s *Service) Logger() *zerolog.Logger { return &s.log }

// BaseURL is the address devices reach this service at ("" until SetBaseURL).
func (s *Service) BaseURL() string { return s.baseURL }

// Shared is the service's store when replicas share it (PostgreSQL).
func (s *Service) Shared() (store.Shared, bool) {
	sh, ok := s.raw.(store.Shared)
	return sh, ok
}

// Account is the AWS account ID in this service's ARNs.
func (s *Service) Account() string { return s.account }
