package devserver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/log"
	pgplugin "go.temporal.io/server/common/persistence/sql/sqlplugin/postgresql"
	"go.temporal.io/server/tools/common/schema"
	tsql "go.temporal.io/server/tools/sql"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/otaflow/otaflow/internal/tlog"
	"github.com/rs/zerolog"
)

// Postgres puts the Temporal server's persistence and visibility in PostgreSQL: the
// production engine, for tests of the production shape. The databases are created when
// missing and their schemas brought up to date by Temporal's own schema tool (the
// temporal-sql-tool's setup and update tasks, from the server module's embedded schema).
type Postgres struct {
	Addr     string // host:port
	User     string
	Password string
	// Database and VisibilityDatabase default to temporal and temporal_visibility.
	Database, VisibilityDatabase string
}

func (p *Postgres) sqlConfig(db string) *config.SQL {
	return &config.SQL{PluginName: pgplugin.PluginNamePGX, DatabaseName: db, ConnectAddr: p.Addr, ConnectProtocol: "tcp",
		User: p.User, Password: p.Password, MaxConns: 20, MaxIdleConns: 20, MaxConnLifetime: time.Hour}
}

// setupPostgres creates the two databases if needed and applies every schema version they
// lack; it returns their persistence configurations.
func setupPostgres(p *Postgres, logger log.Logger) (main, visibility *config.SQL, err error) {
	if p.Database == "" {
		p.Database = "temporal"
	}
	if p.VisibilityDatabase == "" {
		p.VisibilityDatabase = "temporal_visibility"
	}
	for _, s := range []struct {
		db, schema string
		cfg        **config.SQL
	}{{p.Database, "postgresql/v12/temporal", &main}, {p.VisibilityDatabase, "postgresql/v12/visibility", &visibility}} {
		cfg := p.sqlConfig(s.db)
		if err := tsql.DoCreateDatabase(p.sqlConfig(s.db), "postgres", logger); err != nil && !strings.Contains(err.Error(), "already exists") {
			return nil, nil, fmt.Errorf("create Temporal database %s on %s: %w", s.db, p.Addr, err)
		}
		conn, err := tsql.NewConnection(cfg, logger)
		if err != nil {
			return nil, nil, fmt.Errorf("connect to Temporal database %s on %s: %w", s.db, p.Addr, err)
		}
		if _, verr := conn.ReadSchemaVersion(); verr != nil { // a new database: version tables first
			if err := schema.NewSetupSchemaTask(conn, &schema.SetupConfig{InitialVersion: "0.0"}, logger).Run(); err != nil {
				conn.Close()
				return nil, nil, fmt.Errorf("set up schema versioning in %s: %w", s.db, err)
			}
		}
		err = schema.NewUpdateSchemaTask(conn, &schema.UpdateConfig{DBName: s.db, SchemaName: s.schema}, logger).Run()
		conn.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("update Temporal schema %s in %s: %w", s.schema, s.db, err)
		}
		*s.cfg = cfg
	}
	return main, visibility, nil
}

// registerNamespace creates the namespace and its search attributes through the running
// server (on SQLite the schema tool writes them before the server starts). Both steps are
// idempotent, so a restart repeats them harmlessly.
func (s *Server) registerNamespace(ctx context.Context, o Options) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c, err := client.Dial(client.Options{HostPort: s.frontendAddr, Logger: tlog.New(zerolog.Nop())})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.WorkflowService().RegisterNamespace(ctx, &workflowservice.RegisterNamespaceRequest{
		Namespace: o.Namespace, WorkflowExecutionRetentionPeriod: durationpb.New(72 * time.Hour)})
	var exists *serviceerror.NamespaceAlreadyExists
	if err != nil && !errors.As(err, &exists) {
		return fmt.Errorf("register namespace %s: %w", o.Namespace, err)
	}
	for {
		_, err = c.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
			Namespace: o.Namespace, SearchAttributes: o.SearchAttributes})
		var already *serviceerror.AlreadyExists
		if err == nil || errors.As(err, &already) || len(o.SearchAttributes) == 0 {
			break
		}
		// A namespace just registered is not in every service's cache for a few seconds.
		var nf *serviceerror.NamespaceNotFound
		if !errors.As(err, &nf) || ctx.Err() != nil {
			return fmt.Errorf("add search attributes to %s: %w", o.Namespace, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Wait until the namespace answers, so workers and clients started next find it.
	for {
		if _, err = c.WorkflowService().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: o.Namespace}); err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("namespace %s not served after registering it: %w", o.Namespace, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
