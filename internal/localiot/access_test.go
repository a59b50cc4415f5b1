package localiot_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/accessclient"
	"github.com/otaflow/otaflow/internal/iotclient"
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/rest"
)

// accessFixture is a jobs service on loopback and clients for it.
type accessFixture struct {
	t     *testing.T
	url   string
	svc   *localiot.Service
	clock *fakeClock
	admin *accessclient.Client
}

func newAccessFixture(t *testing.T) *accessFixture {
	svc, clock := openWithClock(t)
	srv := httptest.NewServer(rest.Handler(svc, &rest.SigV4Verifier{Creds: testCreds, Region: "us-east-1"}))
	t.Cleanup(srv.Close)
	f := &accessFixture{t: t, url: srv.URL, svc: svc, clock: clock}
	f.admin = f.access(testCreds.AccessKeyID, testCreds.SecretAccessKey)
	return f
}

func (f *accessFixture) config(id, secret string) iotclient.Config {
	return iotclient.Config{Endpoint: f.url, Region: "us-east-1", AccessKeyID: id, SecretAccessKey: secret}
}

func (f *accessFixture) access(id, secret string) *accessclient.Client {
	c, err := accessclient.New(context.Background(), f.config(id, secret))
	require.NoError(f.t, err)
	return c
}

func (f *accessFixture) iot(k *accessclient.Key) *iot.Client {
	c, err := iotclient.NewIoT(context.Background(), f.config(k.ID, k.Secret))
	require.NoError(f.t, err)
	return c
}

func (f *accessFixture) key(role string, groups ...string) *accessclient.Key {
	k, err := f.admin.CreateKey(context.Background(), role, groups, "for "+role)
	require.NoError(f.t, err)
	require.NotEmpty(f.t, k.Secret)
	return k
}

// errorCode is the AWS exception name of err ("" for none).
func errorCode(err error) string {
	var api smithy.APIError
	if errors.As(err, &api) {
		return api.ErrorCode()
	}
	if err != nil {
		return err.Error()
	}
	return ""
}

// Every role through aws-sdk-go-v2: what it may do is done, what it may not is refused with
// AccessDeniedException naming the role it needs, and both are in the audit log.
func TestRolesAllowAndRefuse(t *testing.T) {
	ctx := context.Background()
	f := newAccessFixture(t)
	viewer, operator, releaser := f.key("viewer"), f.key("operator"), f.key("release-manager")
	_, err := f.admin.CreateKey(ctx, "superuser", nil, "")
	require.ErrorContains(t, err, "use one of viewer, operator, release-manager, admin")

	create := func(k *accessclient.Key, name string) error {
		_, err := f.iot(k).CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String(name)})
		return err
	}
	require.NoError(t, create(operator, "pi-1"), "an operator manages things")
	err = create(viewer, "pi-2")
	require.Equal(t, "AccessDeniedException", errorCode(err))
	require.ErrorContains(t, err, "may not CreateThing: it needs the operator or admin role")
	require.Equal(t, "AccessDeniedException", errorCode(create(releaser, "pi-2")))

	for _, k := range []*accessclient.Key{viewer, operator, releaser} {
		out, err := f.iot(k).ListThings(ctx, &iot.ListThingsInput{})
		require.NoError(t, err, "every role reads (%s)", k.Role)
		require.Len(t, out.Things, 1)
	}

	// Publishing (release metadata) is the release manager's, not the operator's.
	publish := func(k *accessclient.Key) int {
		resp := signedPut(t, f.url+"/tuf/releases/1.targets.json", []byte(`{}`), rest.Credentials{AccessKeyID: k.ID, SecretAccessKey: k.Secret})
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, 403, publish(operator))
	require.NotEqual(t, 403, publish(releaser), "a release manager publishes")

	// Access is the admin's.
	_, err = f.access(operator.ID, operator.Secret).CreateKey(ctx, "admin", nil, "")
	require.Equal(t, "AccessDeniedException", err.(*accessclient.APIError).Code)
	require.ErrorContains(t, err, "needs the admin role")
	_, err = f.access(viewer.ID, viewer.Secret).ListKeys(ctx)
	require.ErrorContains(t, err, "AccessDeniedException")
	me, err := f.access(releaser.ID, releaser.Secret).WhoAmI(ctx)
	require.NoError(t, err)
	require.Equal(t, "release-manager", me.Role)
	require.Equal(t, []string{"read", "publish"}, me.Permissions)

	// A key no one issued is refused as AWS refuses it, and recorded.
	_, err = f.iot(&accessclient.Key{ID: "OTFAUNKNOWN", Secret: "x"}).ListThings(ctx, &iot.ListThingsInput{})
	require.Equal(t, "UnrecognizedClientException", errorCode(err))

	entries, _, err := f.admin.Audit(ctx, localiot.AuditQuery{Oldest: true})
	require.NoError(t, err)
	var lines []string
	for _, e := range entries {
		lines = append(lines, e.Who+" "+e.Action+" "+e.Resource+" "+e.Outcome)
	}
	require.Contains(t, lines, operator.ID+" CreateThing /things/pi-1 ok")
	require.Contains(t, lines, viewer.ID+" CreateThing /things/pi-2 denied")
	require.Contains(t, lines, operator.ID+" CreateAccessKey /access-keys denied")
	require.Contains(t, lines, "anonymous GET /things refused")
	require.Contains(t, lines, testCreds.AccessKeyID+" CreateAccessKey /access-keys ok")
	for _, l := range lines {
		require.NotContains(t, l, "ListThings", "reads are not recorded")
	}
	denied, _, err := f.admin.Audit(ctx, localiot.AuditQuery{Outcome: "denied", Who: viewer.ID})
	require.NoError(t, err)
	require.Len(t, denied, 2, "CreateThing and ListAccessKeys")
	require.Equal(t, "ListAccessKeys", denied[0].Action, "newest first")
	require.Equal(t, localiot.RoleViewer, denied[0].Role)
	require.Equal(t, "127.0.0.1", denied[0].From)
}

// Keys are listed without secrets, deactivated, rotated with a grace period and deleted; each
// takes effect on the next request.
func TestAccessKeyLifecycle(t *testing.T) {
	ctx := context.Background()
	f := newAccessFixture(t)
	k := f.key("operator")
	c := f.iot(k)
	list := func() error { _, err := c.ListThings(ctx, &iot.ListThingsInput{}); return err }
	require.NoError(t, list())

	keys, err := f.admin.ListKeys(ctx)
	require.NoError(t, err)
	require.Len(t, keys, 1)
	require.Empty(t, keys[0].Secret, "a secret is shown once")
	require.Equal(t, testCreds.AccessKeyID, keys[0].CreatedBy)

	_, err = f.admin.SetStatus(ctx, k.ID, "Inactive")
	require.NoError(t, err)
	require.ErrorContains(t, list(), "this access key is inactive")
	_, err = f.admin.SetStatus(ctx, k.ID, "Active")
	require.NoError(t, err)
	require.NoError(t, list())

	fresh, err := f.admin.RotateKey(ctx, k.ID, time.Hour)
	require.NoError(t, err)
	require.Equal(t, "operator", fresh.Role)
	require.NoError(t, list(), "the old key signs during its grace period")
	require.NoError(t, func() error { _, err := f.iot(fresh).ListThings(ctx, &iot.ListThingsInput{}); return err }())
	_, err = f.admin.RotateKey(ctx, k.ID, time.Hour)
	require.ErrorContains(t, err, "was rotated already, to "+fresh.ID)
	f.clock.Advance(time.Hour)
	require.ErrorContains(t, list(), "its grace period is over")

	require.NoError(t, f.admin.DeleteKey(ctx, fresh.ID))
	_, err = f.iot(fresh).ListThings(ctx, &iot.ListThingsInput{})
	require.Equal(t, "UnrecognizedClientException", errorCode(err))
	require.ErrorContains(t, f.admin.DeleteKey(ctx, fresh.ID), "ResourceNotFoundException")
}

// A key limited to thing groups changes the things of those groups (and of groups below
// them) and nothing else; it still reads everything.
func TestKeysLimitedToThingGroups(t *testing.T) {
	ctx := context.Background()
	f := newAccessFixture(t)
	for _, g := range []struct{ name, parent string }{{"berlin", ""}, {"berlin-line-3", "berlin"}, {"paris", ""}} {
		_, err := f.svc.CreateThingGroup(g.name, g.parent, localiot.GroupProperties{})
		require.NoError(t, err)
	}
	for thing, group := range map[string]string{"b-1": "berlin-line-3", "p-1": "paris"} {
		_, err := f.svc.CreateThing(thing, nil)
		require.NoError(t, err)
		require.NoError(t, f.svc.AddThingToThingGroup(group, thing))
	}
	_, err := f.admin.CreateKey(ctx, "operator", []string{"lyon"}, "")
	require.ErrorContains(t, err, "thing group lyon does not exist")
	berlin := f.iot(f.key("operator", "berlin"))

	update := func(thing string) error {
		_, err := berlin.UpdateThing(ctx, &iot.UpdateThingInput{ThingName: aws.String(thing), AttributePayload: &types.AttributePayload{Attributes: map[string]string{"site": "x"}}})
		return err
	}
	require.NoError(t, update("b-1"), "a thing in a group below the key's")
	err = update("p-1")
	require.Equal(t, "AccessDeniedException", errorCode(err))
	require.ErrorContains(t, err, "thing p-1 is outside the thing groups")

	job := func(id string, targets ...string) error {
		_, err := berlin.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String(id), Targets: targets, Document: aws.String(`{"operation":"x"}`)})
		return err
	}
	require.NoError(t, job("in-berlin", groupArn("berlin-line-3"), thingArn("b-1")))
	require.Equal(t, "AccessDeniedException", errorCode(job("both", groupArn("berlin"), groupArn("paris"))))
	_, err = f.svc.CreateJob(localiot.CreateJobInput{JobID: "in-paris", Targets: []string{groupArn("paris")}, Document: `{"operation":"x"}`})
	require.NoError(t, err)
	_, err = berlin.CancelJob(ctx, &iot.CancelJobInput{JobId: aws.String("in-paris")})
	require.Equal(t, "AccessDeniedException", errorCode(err), "a job on another site's devices")
	_, err = berlin.CancelJob(ctx, &iot.CancelJobInput{JobId: aws.String("in-berlin")})
	require.NoError(t, err)
	_, err = berlin.CreateThingType(ctx, &iot.CreateThingTypeInput{ThingTypeName: aws.String("pi")})
	require.ErrorContains(t, err, "names no thing or thing group")
	_, err = berlin.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String("p-1")})
	require.NoError(t, err, "it reads everything")
}

// The audit log pages through many entries either way, and filters by prefix and time.
func TestAuditLogPagesAndFilters(t *testing.T) {
	ctx := context.Background()
	f := newAccessFixture(t)
	for i := range 30 {
		require.NoError(t, f.svc.Audit(localiot.AuditEntry{Who: "alice", Via: "console", Action: "rollout.pause", Resource: "rollout/r" + strings.Repeat("x", i%3), Outcome: "ok"}))
	}
	f.clock.Advance(time.Hour)
	require.NoError(t, f.svc.Audit(localiot.AuditEntry{Who: "bob", Via: "cli", Action: "rollout.cancel", Resource: "rollout/r", Reason: "bad canary", Outcome: "ok"}))

	var all []localiot.AuditEntry
	token := ""
	for {
		page, next, err := f.admin.Audit(ctx, localiot.AuditQuery{Limit: 7, NextToken: token, Action: "rollout."})
		require.NoError(t, err)
		all = append(all, page...)
		if token = next; next == "" || len(page) == 0 {
			break
		}
	}
	require.Len(t, all, 31)
	require.Equal(t, "bob", all[0].Who, "newest first")
	require.Equal(t, "bad canary", all[0].Reason)
	for i := 1; i < len(all); i++ {
		require.Less(t, all[i].Seq, all[i-1].Seq)
	}
	late, _, err := f.admin.Audit(ctx, localiot.AuditQuery{Since: f.clock.Now().Add(-time.Minute)})
	require.NoError(t, err)
	require.Len(t, late, 1)
	require.Equal(t, "rollout.cancel", late[0].Action)
	xs, _, err := f.admin.Audit(ctx, localiot.AuditQuery{Resource: "rollout/rxx", Who: "alice"})
	require.NoError(t, err)
	require.Len(t, xs, 10)
}

// TestSignInRefusesAlike: an unknown user and a wrong password get the same refusal, which
// says neither which was wrong; the unknown user is checked against a hash made at the first
// sign-in (not at package init, which every starter command paid for).
func TestSignInRefusesAlike(t *testing.T) {
	svc, _ := openWithClock(t)
	_, err := svc.CreateUser(localiot.UserInput{Name: "ana", Password: "the password of ana 2026", Role: localiot.RoleOperator, By: "test"})
	require.NoError(t, err)

	_, err = svc.Authenticate("nobody", "the password of ana 2026")
	require.ErrorIs(t, err, localiot.ErrSignIn, "an unknown user")
	_, err = svc.Authenticate("ana", "the password of bob 2026")
	require.ErrorIs(t, err, localiot.ErrSignIn, "a wrong password")
	_, err = svc.Authenticate("nobody", "")
	require.ErrorIs(t, err, localiot.ErrSignIn, "an unknown user, again (the dummy hash is made once)")

	p, err := svc.Authenticate("ana", "the password of ana 2026")
	require.NoError(t, err)
	require.Equal(t, "ana", p.Name)
	require.Equal(t, localiot.RoleOperator, p.Role)
}
