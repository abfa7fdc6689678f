FROM python:3.13-slim

WORKDIR /app
COPY pyproject.toml setup.cfg README.md ./
COPY spacesvc ./spacesvc
COPY backends ./backends
COPY migrations ./migrations
RUN pip install --no-cache-dir . && useradd --system --home /app spacesvc

USER spacesvc
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"
CMD ["spacesvc", "serve", "--host", "0.0.0.0", "--port", "8080"]
