// Package iotclient builds the aws-sdk-go-v2 clients otaflow uses. With an endpoint set they
// talk to the local jobs service; without one, to AWS with the standard credential chain.
package iotclient

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/otaflow/otaflow/internal/cliconfig"
)

// Config selects the IoT control plane.
type Config struct {
	// Endpoint overrides the AWS endpoint, e.g. http://127.0.0.1:4566 for the local service.
	Endpoint string
	Region   string
	// AccessKeyID and SecretAccessKey, when set, are used instead of the default chain.
	AccessKeyID     string
	SecretAccessKey string
	// Timeout bounds each HTTP request (default DefaultTimeout).
	Timeout time.Duration
	// HTTP, when set, carries the requests instead of a new client (rest.InProcessClient).
	HTTP *http.Client
}

// DefaultTimeout bounds one request to the IoT control plane.
const DefaultTimeout = 30 * time.Second

// AWSConfig loads the aws.Config for cfg.
func AWSConfig(ctx context.Context, cfg Config) (aws.Config, error) {
	var opts []func(*config.LoadOptions) error
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.AccessKeyID != "" {
		opts = append(opts, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, "")))
	}
	if cfg.Endpoint != "" {
		opts = append(opts, config.WithBaseEndpoint(cfg.Endpoint))
	}
	// Every call is bounded: an endpoint that accepts the connection and never answers ends
	// the call (and its retries) instead of hanging the CLI or an activity.
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	opts = append(opts, config.WithHTTPClient(awshttp.NewBuildableClient().WithTimeout(timeout).WithDialerOptions(func(d *net.Dialer) {
		d.Timeout = min(timeout, 10*time.Second)
	})))
	ac, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("load AWS configuration: %w", err)
	}
	if ac.Region == "" {
		return aws.Config{}, fmt.Errorf("no AWS region configured: pass --region or set AWS_REGION")
	}
	if cfg.HTTP != nil {
		// Set after loading: the loader would refuse a plain client when AWS_CA_BUNDLE is set.
		ac.HTTPClient = cfg.HTTP
	}
	return ac, nil
}

// NewIoT returns an AWS IoT control-plane client for cfg.
func NewIoT(ctx context.Context, cfg Config) (*iot.Client, error) {
	ac, err := AWSConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Endpoint == "" {
		return iot.NewFromConfig(ac), nil
	}
	// Against the local service, every request states its body's hash in the signed
	// x-amz-content-sha256 header, so the service checks the signature before it reads the
	// body (an unsigned body is never held in memory).
	return iot.NewFromConfig(ac, func(o *iot.Options) {
		o.APIOptions = append(o.APIOptions, v4.AddContentSHA256HeaderMiddleware)
	}), nil
}

// ForCLI is a client for the IoT settings of a command (cliconfig.IoT, Resolve applied).
func ForCLI(ctx context.Context, i *cliconfig.IoT) (*iot.Client, error) {
	i.Resolve()
	return NewIoT(ctx, Config{Endpoint: i.Endpoint, Region: i.Region, AccessKeyID: i.AccessKeyID, SecretAccessKey: i.SecretAccessKey})
}
