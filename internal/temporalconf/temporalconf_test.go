package temporalconf_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/temporalconf"
)

// TestClientOptions: Temporal is reached as the SDK's environment configuration says (API key,
// TLS, a profile of the Temporal CLI's config file); flags override it; the local dev server is
// the default.
func TestClientOptions(t *testing.T) {
	for _, v := range []string{"TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY", "TEMPORAL_TLS", "TEMPORAL_PROFILE"} {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	t.Setenv("TEMPORAL_CONFIG_FILE", filepath.Join(t.TempDir(), "none.toml"))
	bind := func(args ...string) *temporalconf.Temporal {
		var tc temporalconf.Temporal
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		tc.Bind(fs)
		require.NoError(t, fs.Parse(args))
		return &tc
	}
	o, err := bind().ClientOptions()
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:7233", o.HostPort)
	require.Equal(t, "default", o.Namespace)
	require.Nil(t, o.Credentials)

	t.Setenv("TEMPORAL_ADDRESS", "prod.tmprl.cloud:7233")
	t.Setenv("TEMPORAL_NAMESPACE", "fleet.acct")
	t.Setenv("TEMPORAL_API_KEY", "key-123")
	tc := bind()
	o, err = tc.ClientOptions()
	require.NoError(t, err)
	require.Equal(t, "prod.tmprl.cloud:7233", o.HostPort)
	require.Equal(t, "fleet.acct", o.Namespace)
	require.NotNil(t, o.Credentials, "an API key becomes credentials")
	require.NotNil(t, o.ConnectionOptions.TLS, "an API key turns TLS on")
	require.Equal(t, "prod.tmprl.cloud:7233", tc.Settings()["temporalAddress"], "the settings show what was chosen")

	o, err = bind("--temporal-address", "10.0.0.1:7233", "--namespace", "other").ClientOptions()
	require.NoError(t, err)
	require.Equal(t, "10.0.0.1:7233", o.HostPort, "a flag beats the environment")
	require.Equal(t, "other", o.Namespace)

	profiles := filepath.Join(t.TempDir(), "temporal.toml")
	require.NoError(t, os.WriteFile(profiles, []byte("[profile.staging]\naddress = \"staging:7233\"\nnamespace = \"stg\"\n"), 0o600))
	for _, v := range []string{"TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY"} {
		os.Unsetenv(v)
	}
	t.Setenv("TEMPORAL_CONFIG_FILE", profiles)
	o, err = bind("--temporal-profile", "staging").ClientOptions()
	require.NoError(t, err)
	require.Equal(t, "staging:7233", o.HostPort)
	require.Equal(t, "stg", o.Namespace)
	_, err = bind("--temporal-profile", "nope").ClientOptions()
	require.Error(t, err)
}
