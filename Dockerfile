# otaflow's images, one target per process:
#   docker build --target jobs-service .   the jobs service alone (no Temporal server linked)
#   docker build --target worker .         the rollout worker
#   docker build .                         the starter CLI (and the local all-in-one stack)
# Every image is distroless and runs as an unprivileged user; no secret is baked in: they come
# from the environment at run time.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/jobs-service ./jobs-service \
 && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/worker ./worker \
 && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/starter ./starter \
 && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/otaflow-agent ./agent \
 && mkdir -p /out/empty

FROM gcr.io/distroless/static-debian12:nonroot AS jobs-service
COPY --from=build /out/jobs-service /usr/local/bin/jobs-service
# Directories for named volumes, owned by the image's user (a new volume copies them).
COPY --from=build --chown=65532:65532 /out/empty /data
COPY --from=build --chown=65532:65532 /out/empty /artifacts
USER nonroot
EXPOSE 4566
HEALTHCHECK --interval=10s --timeout=5s --retries=3 CMD ["/usr/local/bin/jobs-service", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/jobs-service"]

FROM gcr.io/distroless/static-debian12:nonroot AS worker
COPY --from=build /out/worker /usr/local/bin/worker
COPY --from=build --chown=65532:65532 /out/empty /catalog
USER nonroot
ENTRYPOINT ["/usr/local/bin/worker"]

FROM gcr.io/distroless/static-debian12:nonroot AS starter
COPY --from=build /out/starter /out/otaflow-agent /usr/local/bin/
COPY --from=build --chown=65532:65532 /out/empty /catalog
USER nonroot
ENTRYPOINT ["/usr/local/bin/starter"]
