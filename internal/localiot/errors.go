package localiot

import (
	"fmt"

	"github.com/otaflow/otaflow/internal/iotjobs"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

// ErrorCode names an error the way AWS does. The REST plane sends the exception name, the MQTT
// plane the Jobs error code.
type ErrorCode = iotjobs.ErrorCode

const (
	CodeInvalidRequest         = iotjobs.CodeInvalidRequest
	CodeResourceNotFound       = iotjobs.CodeResourceNotFound
	CodeInvalidStateTransition = iotjobs.CodeInvalidStateTransition
	CodeVersionMismatch        = iotjobs.CodeVersionMismatch
	CodeTerminalStateReached   = iotjobs.CodeTerminalStateReached
	CodeInternal               = iotjobs.CodeInternal
	// REST-only codes: the MQTT plane answers them as InvalidRequest.
	CodeAlreadyExists ErrorCode = "ResourceAlreadyExists"
	CodeUnauthorized  ErrorCode = "Unauthorized"
	CodeConflict      ErrorCode = "Conflict"
	// CodeResourceConflict is AWS's ConflictException (a job template that exists).
	CodeResourceConflict ErrorCode = "ResourceConflict"
	CodeLimitExceeded    ErrorCode = "LimitExceeded"
	// CodePreconditionFailed is S3's answer to a conditional write over an existing object.
	CodePreconditionFailed ErrorCode = "PreconditionFailed"
	// Fleet indexing's: a query the syntax refuses, an aggregation on a field it cannot use.
	CodeInvalidQuery       ErrorCode = "InvalidQuery"
	CodeInvalidAggregation ErrorCode = "InvalidAggregation"
)

// Error is a service error that both planes know how to send.
type Error struct {
	Code    ErrorCode
	Message string
	// State is the execution's current state, sent with VersionMismatch and friends so a device
	// can resynchronise.
	State *store.Execution
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

func Errorf(code ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// mustJob is job, with a missing job an error.
func mustJob(t store.Tx, id string) (*store.Job, error) {
	j, err := t.Job(id)
	if err == nil && j == nil {
		err = Errorf(CodeResourceNotFound, "job %s does not exist", id)
	}
	return j, err
}

// mustThing is thing, with a missing thing an error.
func mustThing(t store.Tx, name string) (*store.Thing, error) {
	th, err := t.Thing(name)
	if err == nil && th == nil {
		err = Errorf(CodeResourceNotFound, "thing %s does not exist", name)
	}
	return th, err
}

// mustExecution is execution, with a missing execution an error.
func mustExecution(t store.Tx, jobID, thing string) (*store.Execution, error) {
	e, err := t.Execution(jobID, thing)
	if err == nil && e == nil {
		err = Errorf(CodeResourceNotFound, "no execution of job %s on thing %s", jobID, thing)
	}
	return e, err
}
