package localiot_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/mqtttest"
)

// TestThingGroupQuotas: through aws-sdk-go-v2, a thing joins at most 10 static groups and
// one group of a hierarchy, as on AWS; the service's NoAWSQuotas option lifts both.
func TestThingGroupQuotas(t *testing.T) {
	ctx := context.Background()
	for _, lifted := range []bool{false, true} {
		t.Run(fmt.Sprintf("lifted=%v", lifted), func(t *testing.T) {
			svc, err := localiot.Open(storeOptions(t, t.TempDir(), localiot.Options{Logger: zerolog.Nop(), NoAWSQuotas: lifted}))
			require.NoError(t, err)
			defer svc.Close()
			c := iotClient(serve(t, svc), testCreds)
			_, err = c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String("dev-1")})
			require.NoError(t, err)
			join := func(group string) error {
				_, err := c.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingGroupName: aws.String(group), ThingName: aws.String("dev-1")})
				return err
			}
			for i := range 11 {
				_, err := c.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String(fmt.Sprintf("g%d", i))})
				require.NoError(t, err)
			}
			for i := range 10 {
				require.NoError(t, join(fmt.Sprintf("g%d", i)))
			}
			require.NoError(t, join("g0"), "joining a group it is in changes nothing")
			err = join("g10")
			var invalid *types.InvalidRequestException
			if lifted {
				require.NoError(t, err)
			} else {
				require.ErrorAs(t, err, &invalid)
				require.Contains(t, aws.ToString(invalid.Message), "already belongs to 10 thing groups")
			}

			_, err = c.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String("canary"), ParentGroupName: aws.String("g0")})
			require.NoError(t, err)
			_, err = c.RemoveThingFromThingGroup(ctx, &iot.RemoveThingFromThingGroupInput{ThingGroupName: aws.String("g9"), ThingName: aws.String("dev-1")})
			require.NoError(t, err)
			err = join("canary")
			if lifted {
				require.NoError(t, err)
			} else {
				require.ErrorAs(t, err, &invalid)
				require.Contains(t, aws.ToString(invalid.Message), "only one group of a hierarchy")
			}
		})
	}
}

// TestDeviceRequestLimits: the Jobs MQTT API refuses, as InvalidRequest with the token, status
// details AWS would refuse (a control character, a value over 1,024 characters, a key outside
// its character set) and a client token over 64 bytes.
func TestDeviceRequestLimits(t *testing.T) {
	dev := deviceWithJob(t, mqtttest.Embedded(t))
	dev.publish("start-next", map[string]any{"clientToken": "s"})
	dev.await("start-next/accepted")
	for i, details := range []map[string]string{
		{"reason": "line one\nline two"},
		{"reason": strings.Repeat("x", 1025)},
		{"bad key!": "v"},
		{"empty": ""},
	} {
		token := fmt.Sprintf("t%d", i)
		dev.publish("j1/update", map[string]any{"clientToken": token, "status": "IN_PROGRESS", "statusDetails": details})
		rej := dev.await("j1/update/rejected")
		require.Equal(t, "InvalidRequest", rej["code"], "%v", details)
		require.Equal(t, token, rej["clientToken"])
	}
	long := strings.Repeat("k", 65)
	dev.publish("j1/update", map[string]any{"clientToken": long, "status": "IN_PROGRESS"})
	require.Equal(t, "InvalidRequest", dev.await("j1/update/rejected")["code"])
	dev.publish("j1/update", map[string]any{"clientToken": "ok", "status": "IN_PROGRESS", "statusDetails": map[string]string{"step": "fine"}})
	dev.await("j1/update/accepted")
}
