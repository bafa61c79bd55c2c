# pdsmux: a static binary on a distroless base, for linux/amd64 and
# linux/arm64 (Raspberry Pi 4/5 with a 64-bit OS):
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t pdsmux:local .
#
# The build stage runs on the builder's own platform and cross-compiles
# (pure Go, CGO_ENABLED=0), so no emulation is needed.
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath \
      -ldflags "-s -w -X github.com/pdsmux/pdsmux/internal/pdsmuxd.Version=${VERSION}" \
      -o /out/pdsmux ./cmd/pdsmux \
 && mkdir -p /out/data

# distroless static: CA certificates and tzdata, no shell, runs as
# nonroot (65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/pdsmux /pdsmux
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
WORKDIR /data
ENV PDSMUX_LISTEN=0.0.0.0:2480 \
    PDSMUX_METRICS_LISTEN=0.0.0.0:2481 \
    PDSMUX_DB_URL=file:/data/pdsmux.db
EXPOSE 2480 2481
VOLUME ["/data"]
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/pdsmux", "health", "--url", "http://127.0.0.1:2480"]
ENTRYPOINT ["/pdsmux"]
CMD ["serve"]
