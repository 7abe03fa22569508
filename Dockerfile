# Operator image: the package and its runtime dependencies only (no Go tooling, no test tools).
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir . && rm -rf /src
USER 65532:65532
ENTRYPOINT ["gpucost"]
CMD ["operator"]
