# Operator image: the package and its runtime dependencies only (no Go tooling, no test tools).
# The CompressionJob worker image is the same with llmcompressor and PyTorch:
#   docker build --build-arg EXTRAS=compress -t ghcr.io/gpucost/compress:0.1.0 .
FROM python:3.11-slim
ARG EXTRAS=""
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}" && rm -rf /src
USER 65532:65532
ENTRYPOINT ["gpucost"]
CMD ["operator"]
