"""RABBITMQ_URL with several nodes (shared/broker.py): parsing, redaction, order, failover delays."""
from __future__ import annotations

import pytest

from shared import broker, secrets
from shared.backoff import Backoff
from workers.ops.management import Management

CLUSTER = "amqp://u:s3cret@rmq-0:5672/%2F, amqp://u:s3cret@rmq-1:5672/%2F,amqp://u:s3cret@rmq-2:5673/%2F"


def test_one_url_is_a_list_of_one():
    assert broker.split_urls("amqp://guest:guest@127.0.0.1:5672/%2F") == ["amqp://guest:guest@127.0.0.1:5672/%2F"]
    [params] = broker.parameters_list("amqp://guest:guest@127.0.0.1:5672/%2F", client_name="w")
    assert (params.host, params.port, params.virtual_host) == ("127.0.0.1", 5672, "/")
    assert params.connection_attempts == 1 and params.client_properties == {"connection_name": "w"}


def test_several_urls_each_their_own_parameters_whitespace_ignored():
    params = broker.parameters_list(CLUSTER, heartbeat_s=7, start=0)
    assert [broker.address(p) for p in params] == ["rmq-0:5672", "rmq-1:5672", "rmq-2:5673"]
    assert all(p.heartbeat == 7 and p.credentials.password == "s3cret" for p in params)


def test_the_list_starts_at_a_random_node_and_wraps_around():
    assert broker.rotated([0, 1, 2], start=1) == [1, 2, 0]
    assert broker.rotated([0, 1, 2], start=5) == [2, 0, 1]
    firsts = {broker.address(broker.parameters_list(CLUSTER)[0]) for _ in range(200)}
    assert firsts == {"rmq-0:5672", "rmq-1:5672", "rmq-2:5673"}  # not every process on the first node
    for _ in range(20):
        order = [broker.address(p) for p in broker.parameters_list(CLUSTER)]
        i = order.index("rmq-0:5672")
        assert order[i:] + order[:i] == ["rmq-0:5672", "rmq-1:5672", "rmq-2:5673"]  # a rotation, not a shuffle


@pytest.mark.parametrize("url, says", [
    ("", "is empty"),
    ("amqp://u:pw@a:5672/%2F,,amqp://u:pw@b:5672/%2F", "entry 2 of 3 is empty"),
    ("amqp://u:pw@a:5672/%2F,", "entry 2 of 2 is empty"),
    ("amqp://u:pw@a:5672/%2F,http://u:pw@b:15672/", "entry 2 of 2 (http://u:***@b:15672/) must start with amqp://"),
    ("amqp://u:pw@a:56x2/%2F", "entry 1 of 1 (amqp://u:***@a:56x2/%2F) is not a URL"),
    ("rmq-0:5672", "must start with amqp://"),
    ("amqp://u:pw@:5672/%2F", "names no host"),
])
def test_a_malformed_entry_is_refused_by_number_without_its_password(url, says):
    with pytest.raises(broker.BrokerUrlError) as refused:
        broker.split_urls(url)
    assert says in str(refused.value)
    assert "pw" not in str(refused.value).replace("pw@", "")  # only ever "u:***@"
    assert ":pw@" not in str(refused.value)


def test_the_start_check_names_rabbitmq_url_and_never_the_password():
    env = {"RABBITMQ_URL": "amqp://u:hunter22@a:5672/%2F,amqp//u:hunter22@b:5672/%2F"}
    [problem] = secrets.broker_problems(env)
    assert problem.variable == "RABBITMQ_URL" and "entry 2 of 2" in problem.problem
    assert "hunter22" not in problem.problem + problem.fix
    assert secrets.broker_problems({"RABBITMQ_URL": CLUSTER}) == []
    assert secrets.broker_problems({}) == []  # the default, 127.0.0.1
    assert "RABBITMQ_URL" in [p.variable for p in secrets.process_problems("dm", env)]


def test_redact_keeps_the_user_host_port_and_vhost_only():
    assert broker.redact("amqp://u:s3cret@rmq-0:5672/%2F") == "amqp://u:***@rmq-0:5672/%2F"
    assert broker.redact("amqps://u:p#art@h/v") == "amqps://u:***@h/v"  # a '#' in a password: no fragment kept
    assert broker.redact("amqp://h:5672/%2F") == "amqp://h:5672/%2F"
    assert broker.redact("amqp://u@h:5672/%2F") == "amqp://u@h:5672/%2F"
    assert broker.redact("amqp//u:pw@h") == "amqp//u:***@h" and broker.redact("u:p@ss@h") == "u:***@h"
    assert "s3cret" not in broker.redact_all(CLUSTER)
    assert broker.redact_all(CLUSTER).count("***") == 3


def test_failover_moves_on_at_once_and_backs_off_only_after_a_whole_round():
    backoff = Backoff(first=1.0, cap=8.0)
    nodes = broker.Failover(CLUSTER, backoff, start=0)
    tried, delays = [], []
    for _ in range(6):  # every node down
        tried.append(broker.address(nodes.current))
        delays.append(nodes.failed())
    assert tried == ["rmq-0:5672", "rmq-1:5672", "rmq-2:5673"] * 2
    assert delays[0] == delays[1] == delays[3] == delays[4] == 0.0
    assert 0.8 <= delays[2] <= 1.2 and 1.6 <= delays[5] <= 2.4  # growing, once per round: no hot loop
    nodes.connected()  # rmq-0 answered
    assert nodes.failed() == 0.0 and broker.address(nodes.current) == "rmq-1:5672"  # lost: the next node at once
    assert backoff.attempts == 0


def test_failover_on_one_node_backs_off_every_time_as_before():
    nodes = broker.Failover("amqp://127.0.0.1:5672/%2F", Backoff(first=1.0), start=0)
    assert nodes.failed() > 0 and nodes.failed() > 1.5


def test_management_api_of_each_node(monkeypatch):
    monkeypatch.delenv("RABBITMQ_MANAGEMENT_URL", raising=False)
    api = Management.from_env(CLUSTER)
    assert api.base_urls == ["http://rmq-0:15672", "http://rmq-1:15672", "http://rmq-2:15672"]
    assert api.vhost == "/" and "s3cret" not in api.where
    monkeypatch.setenv("RABBITMQ_MANAGEMENT_URL", "http://m:pw@127.0.0.1:41010, http://127.0.0.1:41011")
    api = Management.from_env(CLUSTER)
    assert api.base_urls == ["http://127.0.0.1:41010", "http://127.0.0.1:41011"] and "pw" not in api.where
