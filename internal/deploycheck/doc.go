// Package deploycheck holds the checks of what otaflow ships for deployment beside the code:
// docker-compose.yml's images against their pins (the versions otaflow links and tests). It
// has no code of its own; `make compose-check` runs its tests.
package deploycheck
