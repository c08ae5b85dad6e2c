# Stand-in for the prom/prometheus image of docker-compose.yml's monitoring profile, on a machine that
# cannot reach Docker Hub: Debian 12's prometheus package (2.42; the compose file pins v3.5.0), with
# the image's layout: the binary as entrypoint, data in /prometheus, run as nobody.
ARG BASE
FROM ${BASE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
