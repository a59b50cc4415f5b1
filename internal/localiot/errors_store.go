package localiot

import "github.com/otaflow/otaflow/internal/localiot/store"

// mustJob is job, with a missing job an error.
func mustJob(t store.Tx, id string) (*store.Job, error) {
	j, err := t.Job(id)
	if err == nil && j == nil {
		err = errorf(CodeResourceNotFound, "job %s does not exist", id)
	}
	return j, err
}

// mustThing is thing, with a missing thing an error.
func mustThing(t store.Tx, name string) (*store.Thing, error) {
	th, err := t.Thing(name)
	if err == nil && th == nil {
		err = errorf(CodeResourceNotFound, "thing %s does not exist", name)
	}
	return th, err
}

// mustExecution is execution, with a missing execution an error.
func mustExecution(t store.Tx, jobID, thing string) (*store.Execution, error) {
	e, err := t.Execution(jobID, thing)
	if err == nil && e == nil {
		err = errorf(CodeResourceNotFound, "no execution of job %s on thing %s", jobID, thing)
	}
	return e, err
}
