package rest

import (
	"net/http"
	"time"

	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

func (s api) handleCreateJob(r *http.Request) (any, error) {
	var in struct {
		Document        string   `json:"document"`
		DocumentSource  string   `json:"documentSource"`
		Description     string   `json:"description"`
		Targets         []string `json:"targets"`
		TargetSelection string   `json:"targetSelection"`
		TimeoutConfig   struct {
			InProgressTimeoutInMinutes int64 `json:"inProgressTimeoutInMinutes"`
		} `json:"timeoutConfig"`
		RetryConfig *struct {
			CriteriaList []store.RetryCriteria `json:"criteriaList"`
		} `json:"jobExecutionsRetryConfig"`
		PresignedURLConfig *store.PresignConfig `json:"presignedUrlConfig"`
		RolloutConfig      struct {
			MaximumPerMinute int                    `json:"maximumPerMinute"`
			ExponentialRate  *store.ExponentialRate `json:"exponentialRate"`
		} `json:"jobExecutionsRolloutConfig"`
		AbortConfig      *abortConfigJSON  `json:"abortConfig"`
		SchedulingConfig *store.Scheduling `json:"schedulingConfig"`
		JobTemplateArn   string            `json:"jobTemplateArn"`
	}
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	abort, err := in.AbortConfig.criteria()
	if err != nil {
		return nil, err
	}
	if sc := in.SchedulingConfig; sc != nil {
		sc.Start, sc.End, sc.Ended = time.Time{}, time.Time{}, false // set by checkScheduling only
	}
	if in.DocumentSource != "" {
		if in.Document != "" {
			return nil, localiot.Errorf(localiot.CodeInvalidRequest, "give document or documentSource, not both")
		}
		doc, err := s.DocumentFromSource(in.DocumentSource)
		if err != nil {
			return nil, err
		}
		in.Document = doc
	}
	cj := localiot.CreateJobInput{
		JobID: r.PathValue("jobId"), Document: in.Document, Description: in.Description,
		Targets: in.Targets, TargetSelection: in.TargetSelection,
		InProgressTimeoutMinutes: in.TimeoutConfig.InProgressTimeoutInMinutes,
		Retry:                    retryList(in.RetryConfig),
		Presign:                  in.PresignedURLConfig,
		MaxPerMinute:             in.RolloutConfig.MaximumPerMinute,
		Abort:                    abort,
		Scheduling:               in.SchedulingConfig,
		Exponential:              in.RolloutConfig.ExponentialRate,
	}
	if in.JobTemplateArn != "" {
		if err := s.FromTemplate(&cj, in.JobTemplateArn); err != nil {
			return nil, err
		}
	}
	job, err := s.CreateJob(cj)
	if err != nil {
		return nil, err
	}
	return map[string]string{"jobArn": job.Arn, "jobId": job.ID, "description": job.Description}, nil
}

type jobJSON struct {
	JobArn            string               `json:"jobArn"`
	JobID             string               `json:"jobId"`
	TargetSelection   string               `json:"targetSelection"`
	Status            store.JobStatus      `json:"status"`
	ForceCanceled     bool                 `json:"forceCanceled"`
	Comment           string               `json:"comment,omitempty"`
	ReasonCode        string               `json:"reasonCode,omitempty"`
	Description       string               `json:"description,omitempty"`
	Targets           []string             `json:"targets"`
	CreatedAt         *awsTime             `json:"createdAt,omitempty"`
	LastUpdatedAt     *awsTime             `json:"lastUpdatedAt,omitempty"`
	CompletedAt       *awsTime             `json:"completedAt,omitempty"`
	JobProcessDetails store.ProcessDetails `json:"jobProcessDetails"`
	TimeoutConfig     map[string]any       `json:"timeoutConfig"`
	PresignedURL      *store.PresignConfig `json:"presignedUrlConfig,omitempty"`
	RetryConfig       map[string]any       `json:"jobExecutionsRetryConfig,omitempty"`
	RolloutConfig     map[string]any       `json:"jobExecutionsRolloutConfig"`
	AbortConfig       map[string]any       `json:"abortConfig,omitempty"`
	SchedulingConfig  map[string]any       `json:"schedulingConfig,omitempty"`
	// ScheduledRollouts are the next starts of the maintenance windows.
	ScheduledRollouts []map[string]string `json:"scheduledJobRollouts,omitempty"`
}

// abortConfigJSON is abortConfig as requests carry it.
type abortConfigJSON struct {
	CriteriaList []store.AbortCriteria `json:"criteriaList"`
}

// criteria is the list, refusing an abortConfig without one (the member is required).
func (a *abortConfigJSON) criteria() ([]store.AbortCriteria, error) {
	if a == nil {
		return nil, nil
	}
	if len(a.CriteriaList) == 0 {
		return nil, localiot.Errorf(localiot.CodeInvalidRequest, "abortConfig.criteriaList needs at least one criterion")
	}
	return a.CriteriaList, nil
}

func retryList(c *struct {
	CriteriaList []store.RetryCriteria `json:"criteriaList"`
}) []store.RetryCriteria {
	if c == nil {
		return nil
	}
	return c.CriteriaList
}

// rolloutConfigJSON is jobExecutionsRolloutConfig as a job or a job template describes it.
func rolloutConfigJSON(maxPerMinute int, exp *store.ExponentialRate) map[string]any {
	rc := map[string]any{}
	if maxPerMinute > 0 {
		rc["maximumPerMinute"] = maxPerMinute
	}
	if exp != nil {
		rc["exponentialRate"] = exp
	}
	return rc
}

func toJobJSON(j *store.Job, now time.Time) jobJSON {
	out := jobJSON{
		JobArn: j.Arn, JobID: j.ID, TargetSelection: j.TargetSelection, Status: j.Status,
		ForceCanceled: j.ForceCanceled, Comment: j.Comment, ReasonCode: j.ReasonCode,
		Description: j.Description, Targets: j.Targets,
		CreatedAt: ptime(j.CreatedAt), LastUpdatedAt: ptime(j.LastUpdatedAt), CompletedAt: ptime(j.CompletedAt),
		JobProcessDetails: j.Counts,
		TimeoutConfig:     map[string]any{},
		PresignedURL:      j.Presign,
	}
	if j.InProgressTimeout > 0 {
		out.TimeoutConfig["inProgressTimeoutInMinutes"] = int64(j.InProgressTimeout / time.Minute)
	}
	if len(j.Retry) > 0 {
		out.RetryConfig = map[string]any{"criteriaList": j.Retry}
	}
	out.RolloutConfig = rolloutConfigJSON(j.MaxPerMinute, j.Exponential)
	if len(j.Abort) > 0 {
		out.AbortConfig = map[string]any{"criteriaList": j.Abort}
	}
	if sc := j.Scheduling; sc != nil {
		out.SchedulingConfig = map[string]any{}
		for k, v := range map[string]string{"startTime": sc.StartTime, "endTime": sc.EndTime, "endBehavior": sc.EndBehavior} {
			if v != "" {
				out.SchedulingConfig[k] = v
			}
		}
		if len(sc.MaintenanceWindows) > 0 {
			out.SchedulingConfig["maintenanceWindows"] = sc.MaintenanceWindows
			if j.Status == store.JobInProgress || j.Status == localiot.JobScheduled {
				for _, at := range localiot.NextRollouts(sc, now, 7) {
					out.ScheduledRollouts = append(out.ScheduledRollouts, map[string]string{"startTime": at})
				}
			}
		}
	}
	return out
}

func (s api) handleDescribeJob(r *http.Request) (any, error) {
	j, err := s.DescribeJob(r.PathValue("jobId"))
	if err != nil {
		return nil, err
	}
	return map[string]any{"job": toJobJSON(j, s.Clock())}, nil
}

type statusDetailsJSON struct {
	DetailsMap map[string]string `json:"detailsMap,omitempty"`
}

func (s api) handleListJobs(r *http.Request) (any, error) {
	max, err := maxResults(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	if err := onlyQuery(r, "status", "targetSelection", "maxResults", "nextToken", "thingGroupName", "thingGroupId"); err != nil {
		return nil, err
	}
	if err := oneOf("status", q.Get("status"), "IN_PROGRESS", "CANCELED", "COMPLETED", "DELETION_IN_PROGRESS", "SCHEDULED"); err != nil {
		return nil, err
	}
	if err := oneOf("targetSelection", q.Get("targetSelection"), "CONTINUOUS", "SNAPSHOT"); err != nil {
		return nil, err
	}
	group := q.Get("thingGroupName")
	if id := q.Get("thingGroupId"); id != "" {
		name, err := s.GroupNameByID(id)
		if err != nil {
			return nil, err
		}
		if group != "" && group != name {
			return map[string]any{"jobs": []any{}}, nil
		}
		group = name
	}
	jobs, next, err := s.ListJobs(store.JobStatus(q.Get("status")), q.Get("targetSelection"), group, max, q.Get("nextToken"))
	if err != nil {
		return nil, err
	}
	list := make([]map[string]any, 0, len(jobs))
	for _, j := range jobs {
		list = append(list, map[string]any{
			"jobArn": j.Arn, "jobId": j.ID, "status": j.Status, "targetSelection": j.TargetSelection,
			"createdAt": ptime(j.CreatedAt), "lastUpdatedAt": ptime(j.LastUpdatedAt), "completedAt": ptime(j.CompletedAt),
		})
	}
	return page(map[string]any{"jobs": list}, next), nil
}

func (s api) handleDeleteJob(r *http.Request) (any, error) {
	if err := s.DeleteJob(r.PathValue("jobId"), r.URL.Query().Get("force") == "true"); err != nil {
		return nil, err
	}
	return nil, nil
}

func (s api) handleCancelJob(r *http.Request) (any, error) {
	var in struct {
		Comment    string `json:"comment"`
		ReasonCode string `json:"reasonCode"`
	}
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	force := r.URL.Query().Get("force") == "true"
	j, err := s.CancelJob(r.PathValue("jobId"), force, in.Comment, in.ReasonCode)
	if err != nil {
		return nil, err
	}
	return map[string]string{"jobArn": j.Arn, "jobId": j.ID, "description": j.Description}, nil
}

func (s api) handleGetJobDocument(r *http.Request) (any, error) {
	doc, err := s.GetJobDocument(r.PathValue("jobId"))
	if err != nil {
		return nil, err
	}
	return map[string]string{"document": doc}, nil
}

func (s api) handleUpdateJob(r *http.Request) (any, error) {
	var in struct {
		Description                *string `json:"description"`
		JobExecutionsRolloutConfig *struct {
			MaximumPerMinute *int                   `json:"maximumPerMinute"`
			ExponentialRate  *store.ExponentialRate `json:"exponentialRate"`
		} `json:"jobExecutionsRolloutConfig"`
		TimeoutConfig *struct {
			InProgressTimeoutInMinutes *int64 `json:"inProgressTimeoutInMinutes"`
		} `json:"timeoutConfig"`
		PresignedURLConfig *store.PresignConfig `json:"presignedUrlConfig"`
		AbortConfig        *abortConfigJSON     `json:"abortConfig"`
		RetryConfig        *struct {
			CriteriaList []store.RetryCriteria `json:"criteriaList"`
		} `json:"jobExecutionsRetryConfig"`
	}
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	abort, err := in.AbortConfig.criteria()
	if err != nil {
		return nil, err
	}
	u := localiot.UpdateJobInput{Description: in.Description, Presign: in.PresignedURLConfig, Abort: abort}
	if rc := in.JobExecutionsRolloutConfig; rc != nil {
		u.MaxPerMinute, u.Exponential = rc.MaximumPerMinute, rc.ExponentialRate
	}
	if tc := in.TimeoutConfig; tc != nil {
		u.InProgressMinutes = tc.InProgressTimeoutInMinutes
	}
	if rc := in.RetryConfig; rc != nil {
		u.Retry = rc.CriteriaList
	}
	if err := s.UpdateJob(r.PathValue("jobId"), u); err != nil {
		return nil, err
	}
	return nil, nil
}

func (s api) handleAssociateTargetsWithJob(r *http.Request) (any, error) {
	var in struct {
		Targets []string `json:"targets"`
		Comment string   `json:"comment"`
	}
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	if err := onlyQuery(r, "namespaceId"); err != nil || r.URL.Query().Get("namespaceId") != "" {
		return nil, localiot.Errorf(localiot.CodeInvalidRequest, "namespaceId is not supported by this jobs service")
	}
	j, err := s.AssociateTargetsWithJob(r.PathValue("jobId"), in.Targets, in.Comment)
	if err != nil {
		return nil, err
	}
	return map[string]string{"jobArn": j.Arn, "jobId": j.ID, "description": j.Description}, nil
}
