package localiot

import (
	"fmt"
	"slices"
	"unicode"

	"github.com/otaflow/otaflow/internal/iotjobs"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

// AWS IoT's documented quotas that the service enforces unless Options.NoAWSQuotas: a rollout
// that passes here passes on AWS.
const (
	// MaxGroupsPerThing: a thing can belong to at most 10 static thing groups (AWS IoT Core
	// quotas, "Thing groups").
	MaxGroupsPerThing = 10
	// MaxJobTargets: CreateJob takes at most 100 targets (things or thing groups); larger
	// fleets are reached through thing groups.
	MaxJobTargets = 100
)

// checkTargets applies CreateJob's target limit.
func (s *Service) checkTargets(targets []string) error {
	if s.quotas && len(targets) > MaxJobTargets {
		return Errorf(CodeLimitExceeded, "a job takes at most %d targets, not %d: put the things in a thing group and target the group", MaxJobTargets, len(targets))
	}
	return nil
}

// checkJoin refuses a membership AWS would refuse: an 11th static group, or a second group of
// one hierarchy (a thing may belong to a group or to one of its descendants, not both).
func (s *Service) checkJoin(t store.Tx, group, thing string) error {
	if !s.quotas {
		return nil
	}
	have, err := t.ThingGroups(thing)
	if err != nil || slices.Contains(have, group) {
		return err
	}
	if len(have) >= MaxGroupsPerThing {
		return Errorf(CodeInvalidRequest, "thing %s already belongs to %d thing groups, AWS IoT's limit: remove it from one first", thing, len(have))
	}
	mine, err := ancestors(t, group)
	if err != nil {
		return err
	}
	for _, h := range have {
		theirs, err := ancestors(t, h)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(theirs, func(g string) bool { return slices.Contains(mine, g) }) {
			return Errorf(CodeInvalidRequest, "thing %s is in group %s of the same hierarchy as %s: a thing may belong to only one group of a hierarchy", thing, h, group)
		}
	}
	return nil
}

// checkStatusDetails applies the service model's limits on statusDetails.
func (s *Service) checkStatusDetails(details map[string]string) error {
	if !s.quotas {
		return nil
	}
	for k, v := range details {
		if len(k) == 0 || len(k) > iotjobs.MaxDetailsKey || !thingNameRE.MatchString(k) /* the same character set and length */ {
			return Errorf(CodeInvalidRequest, "statusDetails key %q is invalid: use 1-%d of a-z A-Z 0-9 : _ -", trim(k, 40), iotjobs.MaxDetailsKey)
		}
		if len([]rune(v)) == 0 || len([]rune(v)) > iotjobs.MaxDetailsValue {
			return Errorf(CodeInvalidRequest, "statusDetails value of %s is %d characters: the limit is 1-%d", k, len([]rune(v)), iotjobs.MaxDetailsValue)
		}
		for _, r := range v {
			if unicode.IsControl(r) {
				return Errorf(CodeInvalidRequest, "statusDetails value of %s holds a control character (%U)", k, r)
			}
		}
	}
	return nil
}

// CheckClientToken applies the Jobs MQTT API's clientToken limit.
func (s *Service) CheckClientToken(token string) error {
	if s.quotas && len(token) > iotjobs.MaxClientToken {
		return Errorf(CodeInvalidRequest, "clientToken is %d bytes: the limit is %d", len(token), iotjobs.MaxClientToken)
	}
	return nil
}

func trim(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("%s…", s[:n])
}
