# nlb_sdn images: one Dockerfile, three targets. Switches and the lab run outside them.
#   docker build --target controller -t nlb-sdn-controller .
#   docker build --target agent      -t nlb-sdn-agent .
#   docker build --target router     -t nlb-sdn-router .
# docs/operations.md ("Containers") gives the run commands, the volumes and the capabilities each one needs.

FROM python:3.11-slim AS base
WORKDIR /opt/nlb_sdn
COPY setup.cfg pyproject.toml README.md LICENSE ./
COPY nlb_sdn ./nlb_sdn
COPY topologies ./topologies
RUN pip install --no-cache-dir . \
    && groupadd --system nlb && useradd --system --gid nlb --home-dir /var/lib/nlb-sdn --create-home nlb \
    && mkdir -p /etc/nlb-sdn /run/nlb-sdn && chown nlb:nlb /run/nlb-sdn

# The controller needs no privilege: OpenFlow, REST and H&L are plain sockets on unprivileged ports.
FROM base AS controller
USER nlb
EXPOSE 6653/tcp 8080/tcp 9100/udp
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-m", "nlb_sdn.healthcheck", "tcp", "127.0.0.1:6653"]
ENTRYPOINT ["nlb-sdn", "controller", "--config", "/etc/nlb-sdn/controller.yaml"]

# The host agent runs beside the backends in the host's network namespace (--network host). Receiving migrated
# connections restores sockets with TCP_REPAIR, which needs CAP_NET_ADMIN: run it as root with only that capability
# (docker run --cap-drop ALL --cap-add NET_ADMIN). An agent without migrations could run as `nlb`.
FROM base AS agent
USER root
EXPOSE 9101/udp 7001/tcp
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["nlb-sdn-agent", "table", "--config", "/etc/nlb-sdn/agent.yaml"]
ENTRYPOINT ["nlb-sdn-agent", "run", "--config", "/etc/nlb-sdn/agent.yaml"]

# The L7 request router dumps the connections it migrates with TCP_REPAIR: CAP_NET_ADMIN, as the agent. Its listening
# ports are the VIP services' (often 80/443): add CAP_NET_BIND_SERVICE for those below 1024.
FROM base AS router
USER root
EXPOSE 80/tcp 443/tcp 9180/tcp
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-m", "nlb_sdn.healthcheck", "tcp", "127.0.0.1:9180"]
# The arguments name the controller, its token and the migration key: see docs/operations.md.
ENTRYPOINT ["nlb-sdn-router", "run", "--config", "/etc/nlb-sdn/controller.yaml"]
