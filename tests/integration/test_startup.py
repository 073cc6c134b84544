"""Start-up: bad configuration stops a service with a clear message; health tells the truth."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stack.processes import ROOT, ServiceProcess
from tests.client import wait_for


@pytest.mark.parametrize("module", ["order_service", "inventory_service", "notification_service"])
@pytest.mark.parametrize("variable,value,message", [
    ("PORT", "abc", "PORT must be an integer, got 'abc'"),
    ("RABBITMQ_PORT", "70000", "RABBITMQ_PORT must be between 1 and 65535, got 70000"),
    ("PREFETCH_COUNT", "0", "PREFETCH_COUNT must be between 1 and 10000, got 0"),
    ("RABBITMQ_HOST", "rabbit1,,rabbit3",
     "RABBITMQ_HOST must be a comma-separated list of host or host:port, got 'rabbit1,,rabbit3'"),
    ("RABBITMQ_HOST", "rabbit1:5672,rabbit2:x",
     "RABBITMQ_HOST port must be between 1 and 65535, got 'x' in 'rabbit2:x'"),
    ("RABBITMQ_QUEUE_TYPE", "stream", "RABBITMQ_QUEUE_TYPE must be one of classic, quorum, got 'stream'"),
    ("DEDUP_RETENTION", "a week",
     "DEDUP_RETENTION must be a duration such as 7d, 12h, 30m or a number of seconds, got 'a week'"),
])
def test_bad_value_stops_the_service_with_a_clear_message(tmp_path, module, variable, value, message):
    env = {**os.environ, "DATA_DIR": str(tmp_path), variable: value}
    result = subprocess.run([sys.executable, "-m", module], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert f"configuration error: {message}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("module", ["order_service", "inventory_service", "notification_service"])
@pytest.mark.parametrize("env,message", [
    ({"RABBITMQ_TLS_CA_FILE": "/etc/ssl/ca.pem"}, "RABBITMQ_TLS_CA_FILE is set but RABBITMQ_TLS is off; "
                                                  "set RABBITMQ_TLS=on to connect over TLS, or unset it"),
    ({"RABBITMQ_TLS": "on", "RABBITMQ_TLS_CA_FILE": "/nonexistent/ca.pem"},
     "RABBITMQ_TLS_CA_FILE must be a readable file, got '/nonexistent/ca.pem'"),
])
def test_bad_tls_settings_stop_the_service_with_a_clear_message(tmp_path, module, env, message):
    result = subprocess.run([sys.executable, "-m", module], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "DATA_DIR": str(tmp_path), **env}, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"{module.replace('_', '-')}: configuration error: "
                                                  f"{message}"]


@pytest.mark.parametrize("command", [["ops.dlq", "list"], ["ops.migrate_queues", "--to", "quorum"]])
def test_bad_host_list_stops_the_operator_tools_with_a_clear_message(tmp_path, command):
    env = {**os.environ, "RABBITMQ_HOST": "rabbit1,rabbit2:0"}
    result = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == ("configuration error: RABBITMQ_HOST port must be between 1 and "
                                      "65535, got '0' in 'rabbit2:0'")


@pytest.mark.parametrize("variable,value,message", [
    ("RATE_LIMIT_ORDERS", "lots", "RATE_LIMIT_ORDERS must be a rate such as 30/minute or "
                                  "`5/second; 100/hour`, got 'lots'"),
    ("REDIS_URL", "http://cache:6379", "REDIS_URL must look like redis://host:port/db (or rediss://, "
                                       "redis+unix://), got a URL starting 'http'"),
    ("TRUSTED_PROXIES", "gateway", "TRUSTED_PROXIES must be comma-separated IP addresses or networks "
                                   "(CIDR), got 'gateway'"),
    ("METRICS_PORT", "8101", "METRICS_PORT must differ from PORT (8101)"),
])
def test_bad_rate_limit_or_metrics_port_stops_order_service(tmp_path, variable, value, message):
    env = {**os.environ, "DATA_DIR": str(tmp_path), "PORT": "8101", variable: value}
    result = subprocess.run([sys.executable, "-m", "order_service"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"order-service: configuration error: {message}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_bad_success_rate_stops_inventory(tmp_path):
    env = {**os.environ, "DATA_DIR": str(tmp_path), "INVENTORY_SUCCESS_RATE": "1.5"}
    result = subprocess.run([sys.executable, "-m", "inventory_service"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "INVENTORY_SUCCESS_RATE must be between 0.0 and 1.0, got 1.5" in result.stderr


@pytest.mark.parametrize("name", ["inventory", "notification"])
def test_consumer_health_is_503_without_a_broker_and_200_with_one(tmp_path, vhost, name):
    service = ServiceProcess(name, {"RABBITMQ_VHOST": vhost, "RABBITMQ_PORT": "1"}, tmp_path)
    try:
        service.start()
        status = wait_for(service.health, what=f"{name} to answer /health")
        assert status[0] == 503
        assert status[1]["consuming"] is False
        assert service.terminate() == 0, "a service waiting for the broker still stops cleanly"
        service.env["RABBITMQ_PORT"] = "5672"
        service.start().wait_healthy()
        assert service.health()[1]["consuming"] is True
    finally:
        service.kill()
