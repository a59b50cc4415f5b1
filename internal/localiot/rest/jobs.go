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
		RetryConfig        *retryConfig         `json:"jobExecutionsRetryConfig"`
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
		JobID: r.PathValue("jobId"), Document: in.Document, DocumentSource: in.DocumentSource, Description: in.Description,
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
	return identify(job), nil
}

// jobIdentity is what CreateJob, CancelJob and AssociateTargetsWithJob answer.
type jobIdentity struct {
	JobArn      string `json:"jobArn"`
	JobID       string `json:"jobId"`
	Description string `json:"description"`
}

func identify(j *store.Job) *jobIdentity {
	return &jobIdentity{JobArn: j.Arn, JobID: j.ID, Description: j.Description}
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
	TimeoutConfig     struct {
		InProgressTimeoutInMinutes int64 `json:"inProgressTimeoutInMinutes,omitempty"`
	} `json:"timeoutConfig"`
	PresignedURL     *store.PresignConfig `json:"presignedUrlConfig,omitempty"`
	RetryConfig      *retryConfig         `json:"jobExecutionsRetryConfig,omitempty"`
	RolloutConfig    rolloutConfig        `json:"jobExecutionsRolloutConfig"`
	AbortConfig      *abortConfigJSON     `json:"abortConfig,omitempty"`
	SchedulingConfig *schedulingConfig    `json:"schedulingConfig,omitempty"`
	// ScheduledRollouts are the next starts of the maintenance windows.
	ScheduledRollouts []scheduledRollout `json:"scheduledJobRollouts,omitempty"`
}

type retryConfig struct {
	CriteriaList []store.RetryCriteria `json:"criteriaList"`
}

// schedulingConfig is a job's schedulingConfig as DescribeJob answers it.
type schedulingConfig struct {
	StartTime          string                    `json:"startTime,omitempty"`
	EndTime            string                    `json:"endTime,omitempty"`
	EndBehavior        string                    `json:"endBehavior,omitempty"`
	MaintenanceWindows []store.MaintenanceWindow `json:"maintenanceWindows,omitempty"`
}

type scheduledRollout struct {
	StartTime string `json:"startTime"`
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

func retryList(c *retryConfig) []store.RetryCriteria {
	if c == nil {
		return nil
	}
	return c.CriteriaList
}

// rolloutConfig is jobExecutionsRolloutConfig as a job or a job template describes it.
type rolloutConfig struct {
	MaximumPerMinute int                    `json:"maximumPerMinute,omitempty"`
	ExponentialRate  *store.ExponentialRate `json:"exponentialRate,omitempty"`
}

func (rc rolloutConfig) empty() bool { return rc == rolloutConfig{} }

func toJobJSON(j *store.Job, now time.Time) jobJSON {
	out := jobJSON{
		JobArn: j.Arn, JobID: j.ID, TargetSelection: j.TargetSelection, Status: j.Status,
		ForceCanceled: j.ForceCanceled, Comment: j.Comment, ReasonCode: j.ReasonCode,
		Description: j.Description, Targets: j.Targets,
		CreatedAt: ptime(j.CreatedAt), LastUpdatedAt: ptime(j.LastUpdatedAt), CompletedAt: ptime(j.CompletedAt),
		JobProcessDetails: j.Counts,
		PresignedURL:      j.Presign,
		RolloutConfig:     rolloutConfig{MaximumPerMinute: j.MaxPerMinute, ExponentialRate: j.Exponential},
	}
	if j.InProgressTimeout > 0 {
		out.TimeoutConfig.InProgressTimeoutInMinutes = int64(j.InProgressTimeout / time.Minute)
	}
	if len(j.Retry) > 0 {
		out.RetryConfig = &retryConfig{CriteriaList: j.Retry}
	}
	if len(j.Abort) > 0 {
		out.AbortConfig = &abortConfigJSON{CriteriaList: j.Abort}
	}
	if sc := j.Scheduling; sc != nil {
		out.SchedulingConfig = &schedulingConfig{StartTime: sc.StartTime, EndTime: sc.EndTime, EndBehavior: sc.EndBehavior,
			MaintenanceWindows: sc.MaintenanceWindows}
		if len(sc.MaintenanceWindows) > 0 && (j.Status == store.JobInProgress || j.Status == localiot.JobScheduled) {
			for _, at := range localiot.NextRollouts(sc, now, 7) {
				out.ScheduledRollouts = append(out.ScheduledRollouts, scheduledRollout{StartTime: at})
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
	return &describeJobResponse{Job: toJobJSON(j, s.Clock()), DocumentSource: j.DocumentSource}, nil
}

type describeJobResponse struct {
	Job jobJSON `json:"job"`
	// DocumentSource is the S3 URL the job's document was read from, if it was.
	DocumentSource string `json:"documentSource,omitempty"`
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
			return &listJobsResponse{Jobs: []jobSummary{}}, nil
		}
		group = name
	}
	jobs, next, err := s.ListJobs(store.JobStatus(q.Get("status")), q.Get("targetSelection"), group, max, q.Get("nextToken"))
	if err != nil {
		return nil, err
	}
	out := &listJobsResponse{Jobs: make([]jobSummary, 0, len(jobs)), paged: paged{next}}
	for _, j := range jobs {
		out.Jobs = append(out.Jobs, jobSummary{JobArn: j.Arn, JobID: j.ID, Status: j.Status, TargetSelection: j.TargetSelection,
			CreatedAt: ptime(j.CreatedAt), LastUpdatedAt: ptime(j.LastUpdatedAt), CompletedAt: ptime(j.CompletedAt)})
	}
	return out, nil
}

type listJobsResponse struct {
	Jobs []jobSummary `json:"jobs"`
	paged
}

// jobSummary is AWS's JobSummary.
type jobSummary struct {
	JobArn          string          `json:"jobArn"`
	JobID           string          `json:"jobId"`
	Status          store.JobStatus `json:"status"`
	TargetSelection string          `json:"targetSelection"`
	CreatedAt       *awsTime        `json:"createdAt"`
	LastUpdatedAt   *awsTime        `json:"lastUpdatedAt"`
	CompletedAt     *awsTime        `json:"completedAt"`
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
	return identify(j), nil
}

func (s api) handleGetJobDocument(r *http.Request) (any, error) {
	doc, err := s.GetJobDocument(r.PathValue("jobId"))
	if err != nil {
		return nil, err
	}
	return &getJobDocumentResponse{Document: doc}, nil
}

type getJobDocumentResponse struct {
	Document string `json:"document"`
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
	return identify(j), nil
}
