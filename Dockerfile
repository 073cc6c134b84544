# Every service's image, running `python -m $SERVICE`: the same entrypoint the tests run. Build from
# the repository root with the service and its port as build arguments (docker-compose.yml does):
#   docker build --build-arg SERVICE=order_service --build-arg PORT=8101 -t order_service .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/data

WORKDIR /app

COPY requirements.txt .
RUN pip install -r requirements.txt

# Every service package, not only the one this image runs: the operator tools in ops/
# (python -m ops.audit) import all three services' stores.
COPY messaging/ messaging/
COPY ops/ ops/
COPY order_service/ order_service/
COPY inventory_service/ inventory_service/
COPY notification_service/ notification_service/

# Run unprivileged; /data is created before VOLUME so a new named volume inherits its owner.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app \
    && mkdir -p /data \
    && chown app:app /data
USER app
VOLUME ["/data"]

# Which service, on which port. Declared after everything the images share, so the three builds
# reuse those layers. A build argument is gone at run time: ENV keeps both for CMD and HEALTHCHECK.
ARG SERVICE
ARG PORT
# A missing or misspelt argument fails the build, not the container.
RUN test -f "$SERVICE/__main__.py" && test "$PORT" -gt 0
ENV SERVICE=$SERVICE \
    PORT=$PORT

EXPOSE $PORT

# Healthy only when GET /health on $PORT answers 200 (urlopen raises on 503, which exits 1).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, sys, urllib.request; response = urllib.request.urlopen('http://127.0.0.1:' + os.environ['PORT'] + '/health', timeout=3); sys.exit(0 if response.status == 200 else 1)"

# A shell only to read $SERVICE; exec makes python itself the main process, so `docker stop`'s
# SIGTERM reaches the service and it shuts down gracefully.
CMD ["sh", "-c", "exec python -m \"$SERVICE\""]
