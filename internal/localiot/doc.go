// Package localiot is otaflow's local AWS IoT: the part of the AWS IoT control plane (things,
// thing groups and types, jobs and their executions, job templates, named shadows, fleet
// indexing, artifacts and TUF files) and of the device plane (the MQTT Jobs and shadow
// topics) that otaflow uses, speaking AWS's wire protocols so aws-sdk-go-v2's iot client, the
// AWS CLI and devices work against it unchanged. The jobs-service binary serves it.
//
// Where things are:
//   - store/: what is persisted (the records in model.go), the Store and Tx interfaces, and
//     their bbolt and PostgreSQL implementations, with one contract test for both.
//   - errors.go: the errors both planes send, by AWS's names.
//   - service.go: the Service (Open, Close) that every operation hangs off.
//   - one file per resource for the operations, create to delete: things.go, groups.go,
//     thingtypes.go, jobs.go (and abort.go, rate.go, schedule.go for a job's configs),
//     executions.go, templates.go, shadow.go, artifacts.go, fleetindex.go, tokens.go.
//   - sweep.go: timeouts, rate limits and schedules, applied as time passes.
//   - rest/: the REST control plane (rest.Handler): rest.go has the route table and the one
//     adapter that answers an operation's result or error the way AWS does; one file per
//     resource; sigv4.go (authentication), server.go (the listener's limits and TLS),
//     jobsdata.go (iot-jobs-data, the device's Jobs API over HTTPS).
//   - quotas.go: AWS's documented quotas, enforced by default.
//   - mqttplane/: the MQTT device plane (mqttplane.Serve: the Jobs and shadow topics, with
//     leader election on shared stores). The device views of an execution that both device
//     planes send are in executions.go (DeviceExecution).
package localiot
