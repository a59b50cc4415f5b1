package iotclient_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/iotclient"
)

// An endpoint that accepts connections and never answers ends the call with an error instead
// of hanging it (describe-job once waited ten minutes).
func TestACallToASilentEndpointEnds(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // hold it open, say nothing
		}
	}()
	c, err := iotclient.NewIoT(context.Background(), iotclient.Config{Endpoint: "http://" + ln.Addr().String(), Region: "us-east-1",
		AccessKeyID: "k", SecretAccessKey: "s", Timeout: 200 * time.Millisecond})
	require.NoError(t, err)
	_, err = c.DescribeJob(context.Background(), &iot.DescribeJobInput{JobId: aws.String("j")})
	require.Error(t, err)
	// The client's timeout fires: net/http names it "Client.Timeout exceeded" or, when it cuts a
	// dial or read short, "context deadline exceeded".
	require.Regexp(t, `Timeout exceeded|deadline exceeded`, err.Error())
}
