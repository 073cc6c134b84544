"""Configuration: defaults, range checks and fail-fast errors for every service."""
from __future__ import annotations

import pytest

from inventory_service import config as inventory_config
from messaging.settings import (
    ConfigError,
    RetentionSettings,
    broker_settings,
    consumer_settings,
    env_choice,
    env_float,
    env_int,
    env_str,
    retention_settings,
    storage_settings,
)
from notification_service import config as notification_config
from order_service import config as order_config

# --- the primitives ---

def test_env_int_default_when_missing_or_empty():
    assert env_int({}, "N", 7, 1, 10) == 7
    assert env_int({"N": ""}, "N", 7, 1, 10) == 7


def test_env_int_reads_and_accepts_bounds():
    assert env_int({"N": "1"}, "N", 7, 1, 10) == 1
    assert env_int({"N": "10"}, "N", 7, 1, 10) == 10


@pytest.mark.parametrize("raw", ["abc", "1.5", "ten", "0x10"])
def test_env_int_not_an_integer(raw):
    with pytest.raises(ConfigError, match=rf"N must be an integer, got '{raw}'"):
        env_int({"N": raw}, "N", 7, 1, 10)


@pytest.mark.parametrize("raw", ["0", "11", "-3"])
def test_env_int_out_of_range(raw):
    with pytest.raises(ConfigError, match=rf"N must be between 1 and 10, got {raw}"):
        env_int({"N": raw}, "N", 7, 1, 10)


def test_env_float_default_and_value():
    assert env_float({}, "F", 0.5, 0.0, 1.0) == 0.5
    assert env_float({"F": ""}, "F", 0.5, 0.0, 1.0) == 0.5
    assert env_float({"F": "0.25"}, "F", 0.5, 0.0, 1.0) == 0.25
    assert env_float({"F": "1"}, "F", 0.5, 0.0, 1.0) == 1.0


def test_env_float_not_a_number():
    with pytest.raises(ConfigError, match=r"F must be a number, got 'lots'"):
        env_float({"F": "lots"}, "F", 0.5, 0.0, 1.0)


@pytest.mark.parametrize("raw", ["1.5", "-0.1", "nan", "inf"])
def test_env_float_out_of_range(raw):
    with pytest.raises(ConfigError, match=r"F must be between 0.0 and 1.0"):
        env_float({"F": raw}, "F", 0.5, 0.0, 1.0)


def test_env_choice_default_and_case_insensitive():
    assert env_choice({}, "C", "NORMAL", ("NORMAL", "FULL")) == "NORMAL"
    assert env_choice({"C": "full"}, "C", "NORMAL", ("NORMAL", "FULL")) == "FULL"


def test_env_choice_refuses_other_values():
    with pytest.raises(ConfigError, match=r"C must be one of NORMAL, FULL"):
        env_choice({"C": "OFF"}, "C", "NORMAL", ("NORMAL", "FULL"))


def test_env_str_refuses_empty_unless_allowed():
    assert env_str({}, "S", "dflt") == "dflt"
    assert env_str({"S": ""}, "S", "dflt", allow_empty=True) == ""
    with pytest.raises(ConfigError, match="S must not be empty"):
        env_str({"S": ""}, "S", "dflt")


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# --- shared groups ---

def test_broker_settings_defaults():
    broker = broker_settings({})
    assert (broker.host, broker.port, broker.user, broker.password, broker.vhost) == (
        "localhost", 5672, "guest", "guest", "/")


def test_broker_settings_from_environment():
    broker = broker_settings({"RABBITMQ_HOST": "rabbit", "RABBITMQ_PORT": "5673",
                              "RABBITMQ_USER": "u", "RABBITMQ_PASSWORD": "",
                              "RABBITMQ_VHOST": "test-vhost"})
    assert (broker.host, broker.port, broker.user, broker.password, broker.vhost) == (
        "rabbit", 5673, "u", "", "test-vhost")
    parameters = broker.parameters()
    assert (parameters.host, parameters.port, parameters.virtual_host) == (
        "rabbit", 5673, "test-vhost")


@pytest.mark.parametrize("env, message", [
    ({"RABBITMQ_PORT": "abc"}, "RABBITMQ_PORT must be an integer"),
    ({"RABBITMQ_PORT": "70000"}, "RABBITMQ_PORT must be between 1 and 65535"),
    ({"RABBITMQ_HOST": ""}, "RABBITMQ_HOST must not be empty"),
])
def test_broker_settings_bad_values(env, message):
    with pytest.raises(ConfigError, match=message):
        broker_settings(env)


def test_storage_settings_defaults_and_bad_values():
    storage = storage_settings({})
    assert (storage.data_dir, storage.synchronous, storage.busy_timeout_ms) == (
        "./data", "NORMAL", 5000)
    with pytest.raises(ConfigError, match="SQLITE_SYNCHRONOUS"):
        storage_settings({"SQLITE_SYNCHRONOUS": "OFF"})
    with pytest.raises(ConfigError, match="SQLITE_BUSY_TIMEOUT_MS"):
        storage_settings({"SQLITE_BUSY_TIMEOUT_MS": "0"})


def test_consumer_settings_defaults():
    consumer = consumer_settings({})
    assert (consumer.prefetch, consumer.max_batch) == (100, 100)


def test_max_message_bytes_defaults_to_one_mebibyte_within_rabbitmqs_own_limit():
    assert consumer_settings({}).max_message_bytes == 1_048_576
    assert consumer_settings({"MAX_MESSAGE_BYTES": "1024"}).max_message_bytes == 1024
    assert consumer_settings({"MAX_MESSAGE_BYTES": "134217728"}).max_message_bytes == 134_217_728
    for bad in ("1023", "134217729", "1MiB", "-1"):
        with pytest.raises(ConfigError, match="MAX_MESSAGE_BYTES"):
            consumer_settings({"MAX_MESSAGE_BYTES": bad})


def test_batch_size_defaults_to_prefetch():
    assert consumer_settings({"PREFETCH_COUNT": "25"}).max_batch == 25
    assert consumer_settings({"PREFETCH_COUNT": "25", "BATCH_SIZE": "5"}).max_batch == 5


def test_batch_size_cannot_exceed_prefetch():
    assert consumer_settings({"PREFETCH_COUNT": "20", "BATCH_SIZE": "20"}).max_batch == 20
    with pytest.raises(ConfigError, match=r"BATCH_SIZE must be between 1 and 100, got 101"):
        consumer_settings({"BATCH_SIZE": "101"})
    with pytest.raises(ConfigError, match=r"BATCH_SIZE must be between 1 and 5, got 6"):
        consumer_settings({"PREFETCH_COUNT": "5", "BATCH_SIZE": "6"})


# --- each service's load() ---

def test_order_service_defaults():
    settings = order_config.load({})
    assert settings.port == 8101
    assert (settings.workers, settings.threads) == (1, 8)
    assert settings.max_body_bytes == 16 * 1024
    assert settings.broker.host == "localhost"


def test_inventory_service_defaults():
    settings = inventory_config.load({})
    assert settings.port == 8102
    assert settings.success_rate == 0.9
    assert "Burger" in settings.menu


def test_notification_service_defaults():
    assert notification_config.load({}).port == 8103


def test_inventory_menu_from_environment():
    settings = inventory_config.load({"INVENTORY_MENU": " Burger , Pizza ,, "})
    assert settings.menu == ("Burger", "Pizza")
    with pytest.raises(ConfigError, match="INVENTORY_MENU"):
        inventory_config.load({"INVENTORY_MENU": " , ,"})


def test_services_read_port_and_success_rate():
    assert order_config.load({"PORT": "9001"}).port == 9001
    assert inventory_config.load({"INVENTORY_SUCCESS_RATE": "0.5"}).success_rate == 0.5
    assert notification_config.load({"PORT": "9003"}).port == 9003


@pytest.mark.parametrize("load", [order_config.load, inventory_config.load,
                                  notification_config.load], ids=["order", "inventory",
                                                                  "notification"])
@pytest.mark.parametrize("env, message", [
    ({"PORT": "abc"}, "PORT must be an integer, got 'abc'"),
    ({"PORT": "0"}, "PORT must be between 1 and 65535"),
    ({"RABBITMQ_PORT": "x"}, "RABBITMQ_PORT must be an integer"),
    ({"PREFETCH_COUNT": "2", "BATCH_SIZE": "3"}, "BATCH_SIZE must be between 1 and 2"),
])
def test_every_service_fails_fast_on_bad_values(load, env, message):
    with pytest.raises(ConfigError, match=message):
        load(env)


@pytest.mark.parametrize("raw", ["1.5", "-0.1", "ninety"])
def test_bad_success_rate(raw):
    with pytest.raises(ConfigError, match="INVENTORY_SUCCESS_RATE"):
        inventory_config.load({"INVENTORY_SUCCESS_RATE": raw})


@pytest.mark.parametrize("env, name", [({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY"),
                                       ({"WEB_CONCURRENCY": "many"}, "WEB_CONCURRENCY"),
                                       ({"WEB_THREADS": "0"}, "WEB_THREADS")])
def test_bad_order_service_worker_settings(env, name):
    with pytest.raises(ConfigError, match=name):
        order_config.load(env)


# --- several broker nodes, and the queue type ---

def test_one_host_is_one_node_on_rabbitmq_port():
    assert broker_settings({"RABBITMQ_HOST": "rabbit", "RABBITMQ_PORT": "5673"}).nodes == (
        ("rabbit", 5673),)


def test_host_list_with_and_without_ports():
    broker = broker_settings({"RABBITMQ_HOST": "a, b:5673 ,[::1]:5674,[fe80::1]",
                              "RABBITMQ_PORT": "5999"})
    assert broker.nodes == (("a", 5999), ("b", 5673), ("::1", 5674), ("fe80::1", 5999))
    assert [(p.host, p.port) for p in broker.all_parameters()] == list(broker.nodes)
    assert (broker.parameters(1).host, broker.parameters(4).host) == ("b", "a")  # wraps around


@pytest.mark.parametrize("hosts, message", [
    ("a,,b", "RABBITMQ_HOST must be a comma-separated list of host or host:port, got 'a,,b'"),
    ("a,", "RABBITMQ_HOST must be a comma-separated list"),
    ("a:", "RABBITMQ_HOST must be a comma-separated list"),
    (":5672", "RABBITMQ_HOST must be a comma-separated list"),
    ("a b", "RABBITMQ_HOST must be a comma-separated list"),
    ("::1", "RABBITMQ_HOST must be a comma-separated list"),
    ("a:b:5672", "RABBITMQ_HOST must be a comma-separated list"),
    ("a:x", "RABBITMQ_HOST port must be between 1 and 65535, got 'x' in 'a:x'"),
    ("a,b:0", "RABBITMQ_HOST port must be between 1 and 65535, got '0' in 'b:0'"),
    ("a:70000", "RABBITMQ_HOST port must be between 1 and 65535, got '70000'"),
])
def test_bad_host_lists(hosts, message):
    with pytest.raises(ConfigError, match=message):
        broker_settings({"RABBITMQ_HOST": hosts})


def test_queue_type_defaults_to_classic_and_reads_quorum():
    assert broker_settings({}).queue_type == "classic"
    assert broker_settings({"RABBITMQ_QUEUE_TYPE": "quorum"}).queue_type == "quorum"
    assert broker_settings({"RABBITMQ_QUEUE_TYPE": " Quorum "}).queue_type == "quorum"
    assert order_config.load({"RABBITMQ_QUEUE_TYPE": "quorum"}).broker.queue_type == "quorum"


@pytest.mark.parametrize("raw", ["stream", "mirrored", "q"])
def test_bad_queue_type(raw):
    with pytest.raises(ConfigError, match=rf"RABBITMQ_QUEUE_TYPE must be one of classic, quorum, "
                                          rf"got '{raw}'"):
        broker_settings({"RABBITMQ_QUEUE_TYPE": raw})


@pytest.mark.parametrize("raw,seconds", [
    ("7d", 7 * 86400.0), ("12h", 43200.0), ("30m", 1800.0), ("45s", 45.0), ("90", 90.0),
    ("1.5d", 129600.0), (" 2H ", 7200.0),
])
def test_dedup_retention_accepts_units_and_plain_seconds(raw, seconds):
    assert retention_settings({"DEDUP_RETENTION": raw}).window == seconds


def test_retention_defaults_are_seven_days_and_five_minutes():
    assert retention_settings({}) == RetentionSettings() == RetentionSettings(7 * 86400.0, 300.0)
    assert retention_settings({"DEDUP_RETENTION": ""}).window == 7 * 86400.0
    assert retention_settings({"DEDUP_PRUNE_INTERVAL": "0.5"}).prune_interval == 0.5


@pytest.mark.parametrize("env,message", [
    ({"DEDUP_RETENTION": "week"},
     "DEDUP_RETENTION must be a duration such as 7d, 12h, 30m or a number of seconds, got 'week'"),
    ({"DEDUP_RETENTION": "7x"},
     "DEDUP_RETENTION must be a duration such as 7d, 12h, 30m or a number of seconds, got '7x'"),
    ({"DEDUP_RETENTION": "d"},
     "DEDUP_RETENTION must be a duration such as 7d, 12h, 30m or a number of seconds, got 'd'"),
    ({"DEDUP_RETENTION": "0"}, "DEDUP_RETENTION must be between 1s and 3650d, got '0'"),
    ({"DEDUP_RETENTION": "-1d"}, "DEDUP_RETENTION must be between 1s and 3650d, got '-1d'"),
    ({"DEDUP_RETENTION": "nan"}, "DEDUP_RETENTION must be between 1s and 3650d, got 'nan'"),
    ({"DEDUP_PRUNE_INTERVAL": "2d"}, "DEDUP_PRUNE_INTERVAL must be between 0.05s and 1d, got '2d'"),
])
def test_retention_bad_values(env, message):
    with pytest.raises(ConfigError) as caught:
        retention_settings(env)
    assert str(caught.value) == message


def test_every_service_reads_the_retention():
    env = {"DEDUP_RETENTION": "12h", "DEDUP_PRUNE_INTERVAL": "1m"}
    for config in (order_config, inventory_config, notification_config):
        assert config.load(env).retention == RetentionSettings(43200.0, 60.0)


def test_publisher_users_switch_the_sender_check_on_per_sender():
    assert broker_settings({}).senders == ()
    settings = broker_settings({"INVENTORY_PUBLISHER_USER": " inventory_service ",
                                "ORDER_PUBLISHER_USER": ""})
    assert settings.senders == (("inventory", "inventory_service"),)
    assert settings.expected_sender("inventory") == "inventory_service"
    assert settings.expected_sender("order") is None and settings.expected_sender(None) is None


def test_rabbitmq_topology_own_declares_the_services_part_only():
    assert broker_settings({}, "order").part is None
    assert broker_settings({"RABBITMQ_TOPOLOGY": "own"}, "order").part == "order"
    assert broker_settings({"RABBITMQ_TOPOLOGY": "ALL"}, "order").part is None
    assert broker_settings({"RABBITMQ_TOPOLOGY": "own"}).part is None, "the operator's tools: all"
    with pytest.raises(ConfigError, match=r"RABBITMQ_TOPOLOGY must be one of all, own, got 'mine'"):
        broker_settings({"RABBITMQ_TOPOLOGY": "mine"})
