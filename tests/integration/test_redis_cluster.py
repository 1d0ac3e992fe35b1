"""The local Redis Cluster of `courseflow services up --redis-cluster`: real nodes, a real failover."""

from __future__ import annotations

import os
from pathlib import Path

import courseflow_local as services
import pytest
import redis
from courseflow_local.redis_cluster import BUS_OFFSET, REPLICATION_USER, cluster_info, nodes, replication_password
from courseflow_local.redis_server import NO_RETRY
from redis.cluster import ClusterNode, RedisCluster

from courseflow.platform import functions
from courseflow.platform.config import Settings
from tests import failover
from tests.integration.test_cli import courseflow

Cluster = services.LocalCluster


def app_client(cluster: Cluster) -> RedisCluster:
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cluster.nodes],  # type: ignore[no-untyped-call]
        username=cluster.app_username,
        password=cluster.app_password,
        decode_responses=True,
    )


def admin(cluster: Cluster, port: int) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        username=cluster.admin_username,
        password=cluster.admin_password,
        decode_responses=True,
        retry=NO_RETRY,  # a stopped node is refused at once
    )


def test_three_masters_and_three_replicas_serve_every_slot(redis_cluster: Cluster) -> None:
    assert len(redis_cluster.ports) == 6 and redis_cluster.ports[-1] + BUS_OFFSET <= 65535
    for port in redis_cluster.ports:
        info = cluster_info(port, redis_cluster.credentials)
        assert (info["cluster_state"], info["cluster_slots_ok"], info["cluster_known_nodes"]) == ("ok", "16384", "6")
        view = nodes(port, redis_cluster.credentials)
        masters = [node for node in view if node.role == "master"]
        covered = sorted(slot for node in masters for first, last in node.slots for slot in (first, last))
        assert len(masters) == 3 and covered[0] == 0 and covered[-1] == 16383
        assert sum(last - first + 1 for node in masters for first, last in node.slots) == 16384
        replicas = [node for node in view if node.role == "replica"]
        assert sorted(node.master_id or "" for node in replicas) == sorted(node.node_id for node in masters)
        with admin(redis_cluster, port) as client:
            # As durable as the standalone Redis, loopback only, and quick to fail over.
            assert client.config_get("appendonly") == {"appendonly": "yes"}
            assert client.config_get("appendfsync") == {"appendfsync": "always"}
            assert client.config_get("bind") == {"bind": "127.0.0.1"}
            assert client.config_get("cluster-node-timeout") == {"cluster-node-timeout": "3000"}
            # A dead master stops only its own slots, not every partition.
            assert client.config_get("cluster-require-full-coverage") == {"cluster-require-full-coverage": "no"}
        # Passwords in a private file, not on a command line.
        assert (redis_cluster.data_dir / "redis-cluster" / str(port) / "redis.conf").stat().st_mode & 0o777 == 0o600
        pid = redis_cluster.pid(port)
        assert pid is not None
        assert redis_cluster.admin_password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_the_application_user_writes_and_reads_on_every_master(redis_cluster: Cluster) -> None:
    with app_client(redis_cluster) as client:
        keys = [f"{{cf:{n}}}:probe" for n in range(30)]
        for n, key in enumerate(keys):
            client.set(key, str(n))
        assert [client.get(key) for key in keys] == [str(n) for n in range(30)]
        assert len({client.get_node_from_key(key).port for key in keys}) == 3, "keys on fewer than 3 masters"
        # The library of functions too, loaded on every master, and called over a partition's keys.
        functions.load(client)
        client.fcall("raise_horizon", 1, "{cf:1}:a", "7")
        assert client.get("{cf:1}:a") == "7"
        client.delete(*keys, "{cf:1}:a", "{cf:1}:b")


def test_the_application_user_may_not_administer_any_node(redis_cluster: Cluster) -> None:
    with app_client(redis_cluster) as client, pytest.raises(redis.exceptions.NoPermissionError):
        client.flushall()
    for port in redis_cluster.ports:
        app = redis.Redis(
            host="127.0.0.1", port=port, username=redis_cluster.app_username, password=redis_cluster.app_password
        )
        with app:
            assert app.ping()
            for command in (("FLUSHALL",), ("CONFIG", "GET", "*"), ("CLUSTER", "FAILOVER"), ("SHUTDOWN",)):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    app.execute_command(*command)  # type: ignore[no-untyped-call]
        anonymous = redis.Redis(host="127.0.0.1", port=port, retry=NO_RETRY)
        with anonymous, pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        # The replication user may replicate, not read or write keys.
        replicator = redis.Redis(
            host="127.0.0.1",
            port=port,
            username=REPLICATION_USER,
            password=replication_password(redis_cluster.credentials),
        )
        with replicator, pytest.raises(redis.exceptions.NoPermissionError):
            replicator.get("{cf:0}:probe")


def test_a_killed_master_fails_over_and_keeps_what_a_replica_acknowledged(redis_cluster: Cluster) -> None:
    shard = failover.shard_of(redis_cluster, "{cf:7}:requests")
    with app_client(redis_cluster) as client:
        for n in range(100):
            client.xadd("{cf:7}:requests", {"n": str(n)})
        owner = client.get_node_from_key("{cf:7}:requests")
        assert owner.port == shard.master
        assert client.execute_command("WAIT", 1, 5000, target_nodes=owner) == 1

    failover.kill(redis_cluster, shard.master)
    failover.wait_failed_over(redis_cluster, shard)

    with app_client(redis_cluster) as client:
        assert client.get_node_from_key("{cf:7}:requests").port == shard.replica
        assert [fields["n"] for _, fields in client.xrange("{cf:7}:requests")] == [str(n) for n in range(100)]
        failover.rejoin(redis_cluster, shard.master)
        assert failover.shard_of(redis_cluster, "{cf:7}:requests") == failover.Shard(
            slot=shard.slot, master=shard.replica, replica=shard.master
        )
        client.delete("{cf:7}:requests")


def test_up_again_leaves_the_running_cluster_alone(redis_cluster: Cluster) -> None:
    pids = [redis_cluster.pid(port) for port in redis_cluster.ports]
    assert services.up_cluster(redis_cluster.data_dir, services.free_cluster_port()) == redis_cluster

    ports = {name: str(services.free_port()) for name in ("COURSEFLOW_POSTGRES_PORT", "COURSEFLOW_REDIS_PORT")}
    env = _unconfigured() | ports | {"COURSEFLOW_REDIS_CLUSTER_PORT": str(services.free_cluster_port())}
    printed = courseflow("services", "up", "--redis-cluster", "--data-dir", str(redis_cluster.data_dir), env=env)
    assert printed.returncode == 0, printed.stderr
    assert f"export REDIS_CLUSTER_NODES={redis_cluster.nodes_setting}" in printed.stdout.splitlines()
    assert redis_cluster.admin_password not in printed.stdout + printed.stderr
    assert [redis_cluster.pid(port) for port in redis_cluster.ports] == pids

    shown = courseflow("services", "status", "--data-dir", str(redis_cluster.data_dir), env=env)
    assert f"redis-cluster: running on {redis_cluster.nodes_setting} (ok)" in shown.stdout.splitlines()
    assert redis_cluster.app_password not in shown.stdout and redis_cluster.admin_password not in shown.stdout
    assert Settings.from_env(env).local.redis_cluster_port == int(env["COURSEFLOW_REDIS_CLUSTER_PORT"])


def test_down_stops_every_node_and_up_brings_the_data_back(redis_cluster: Cluster) -> None:
    with app_client(redis_cluster) as client:
        client.set("{cf:3}:kept", "before down")
    services.down(redis_cluster.data_dir, only="redis-cluster")
    assert all(redis_cluster.pid(port) is None for port in redis_cluster.ports)
    assert services.status(redis_cluster.data_dir)["redis-cluster"] == "stopped"
    for port in redis_cluster.ports:
        with admin(redis_cluster, port) as client, pytest.raises(redis.ConnectionError):
            client.ping()

    assert services.up_cluster(redis_cluster.data_dir, redis_cluster.ports[0]) == redis_cluster
    with app_client(redis_cluster) as client:
        assert client.get("{cf:3}:kept") == "before down"
        client.delete("{cf:3}:kept")


def test_ports_leave_room_for_the_cluster_bus(tmp_path: Path) -> None:
    with pytest.raises(services.ServicesError, match="bus ports are"):
        services.up_cluster(tmp_path / ".courseflow", 55531)


def _unconfigured() -> dict[str, str]:
    names = ("DATABASE_URL", "REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_CLUSTER_NODES")
    return {k: v for k, v in os.environ.items() if k not in names}
