// Package workflows holds otaflow's Temporal workflows: Rollout, RollbackRollout and
// Deployment. Everything here is deterministic: it imports the Temporal SDK and the
// contract package (workflows/contract: names, requests, results) only. Activities are
// called by the names in the contract, implemented in package activities.
package workflows
