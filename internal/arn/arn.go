// Package arn parses and builds the Amazon Resource Names otaflow uses: AWS IoT things, thing
// groups and jobs, and IAM roles. It is the one ARN parser of the code base.
package arn

import (
	"fmt"
	"strings"
)

// Resource types of AWS IoT ARNs.
const (
	TypeThing      = "thing"
	TypeThingGroup = "thinggroup"
	TypeJob        = "job"
	TypeRole       = "role"
	TypeCert       = "cert"
)

// ARN is arn:PARTITION:SERVICE:REGION:ACCOUNT:TYPE/NAME.
type ARN struct {
	Partition, Service, Region, Account, Type, Name string
}

// String formats the ARN.
func (a ARN) String() string {
	return fmt.Sprintf("arn:%s:%s:%s:%s:%s/%s", a.Partition, a.Service, a.Region, a.Account, a.Type, a.Name)
}

// Parse splits an ARN of the form arn:PARTITION:SERVICE:REGION:ACCOUNT:TYPE/NAME.
func Parse(s string) (ARN, error) {
	parts := strings.SplitN(s, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[1] == "" || parts[2] == "" {
		return ARN{}, fmt.Errorf("%q is not an ARN (arn:aws:SERVICE:REGION:ACCOUNT:TYPE/NAME)", s)
	}
	typ, name, ok := strings.Cut(parts[5], "/")
	if !ok || typ == "" || name == "" {
		return ARN{}, fmt.Errorf("%q is not an ARN of a named resource (…:TYPE/NAME)", s)
	}
	return ARN{Partition: parts[1], Service: parts[2], Region: parts[3], Account: parts[4], Type: typ, Name: name}, nil
}

// IoT builds the ARN of an AWS IoT resource.
func IoT(region, account, typ, name string) string {
	return ARN{Partition: "aws", Service: "iot", Region: region, Account: account, Type: typ, Name: name}.String()
}

// Target is an update target: a thing or thing group, named by ARN or (a thing) by name.
type Target struct {
	// Type is TypeThing or TypeThingGroup.
	Type string
	Name string
	// ARN is the parsed ARN; zero for a bare thing name.
	ARN ARN
}

// ParseTarget takes a thing ARN, a thing-group ARN or a bare thing name.
func ParseTarget(s string) (Target, error) {
	if !strings.HasPrefix(s, "arn:") {
		if s == "" {
			return Target{}, fmt.Errorf("empty target: give a thing ARN (arn:aws:iot:REGION:ACCOUNT:thing/NAME), a thing-group ARN or a thing name")
		}
		return Target{Type: TypeThing, Name: s}, nil
	}
	a, err := Parse(s)
	if err == nil && a.Service == "iot" && (a.Type == TypeThing || a.Type == TypeThingGroup) {
		return Target{Type: a.Type, Name: a.Name, ARN: a}, nil
	}
	return Target{}, fmt.Errorf("target %q is not a thing or thing-group ARN (arn:aws:iot:REGION:ACCOUNT:thing/NAME or …:thinggroup/NAME)", s)
}

// Name returns the resource name of an ARN, or s itself when it is not an ARN (APIs that take
// either a name or an ARN).
func Name(s string) string {
	if a, err := Parse(s); err == nil {
		return a.Name
	}
	return s
}

// IsRole reports whether s is an IAM role ARN.
func IsRole(s string) bool {
	a, err := Parse(s)
	return err == nil && a.Service == "iam" && a.Type == TypeRole
}
