FROM python:3.13-slim

WORKDIR /app
COPY pyproject.toml setup.cfg README.md ./
COPY spacesvc ./spacesvc
COPY backends ./backends
COPY migrations ./migrations
# pip compiles the bytecode here, at build time, as root; the fixed uid/gid is what
# deploy/kubernetes/deployment.yaml's runAsUser/runAsGroup name (tests/test_deploy.py checks it).
RUN pip install --no-cache-dir --disable-pip-version-check . \
  && groupadd --system --gid 10001 spacesvc \
  && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin spacesvc

# The root filesystem may be read-only (Kubernetes readOnlyRootFilesystem): no __pycache__ writes
# at run time; the only writable place a deployment needs to give is /tmp.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"
CMD ["spacesvc", "serve", "--host", "0.0.0.0", "--port", "8080"]
