# The nlb_sdn controller image: os-ken 3.1 + the classifier app. Switches and the lab run outside it.
# docker build -t nlb-sdn . && docker run --rm --network host -v $PWD/examples:/etc/nlb-sdn nlb-sdn
# (set controller.rest.host to 0.0.0.0 in the config to reach REST from outside the container)
FROM python:3.11-slim
WORKDIR /opt/nlb_sdn
COPY setup.cfg pyproject.toml README.md ./
COPY nlb_sdn ./nlb_sdn
COPY topologies ./topologies
RUN pip install --no-cache-dir .
EXPOSE 6653 8080
ENTRYPOINT ["nlb-sdn", "controller", "--config", "/etc/nlb-sdn/fabric.yaml"]
