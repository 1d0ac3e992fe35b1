"""A local Redis Cluster of three masters and three replicas, each node a local Redis as durable as the standalone one.

Each node lives in `<data dir>/redis-cluster/<port>/` (its config, AOF, `nodes.conf`, log and pidfile). The ports are
fixed when the cluster is created: nodes find each other by the addresses in their `nodes.conf`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
from pathlib import Path

import msgspec
import redis

from courseflow_local import redis_server
from courseflow_local.credentials import REDIS_ADMIN_USER, Credentials
from courseflow_local.processes import START_TIMEOUT_S, ServicesError, alive, check_port_free, read_int, run, wait_until
from courseflow_local.unprivileged import server_dir, server_user

MASTERS = 3
NODES = 6  # one replica for each master
SLOTS = 16384
# Each node also listens on its port + 10000 for the cluster bus, so ports stop there.
BUS_OFFSET = 10000
HIGHEST_PORT = 65535 - BUS_OFFSET
# The default 15 s would make every failover test wait 15 s before anything happens; at 3 s a killed master's
# replica takes over in about 4 s. Not shorter: a node stalled that long on a busy 2-core machine (fsync always)
# would be failed over for nothing.
NODE_TIMEOUT_MS = 3000
# Replicas authenticate to their master as this user, which may replicate and do nothing else.
REPLICATION_USER = "replication"
_REFUSED = "the Redis Cluster refuses the admin password of this data dir"


class Node(msgspec.Struct, frozen=True):
    """One node as the cluster sees it (CLUSTER NODES)."""

    node_id: str
    port: int
    role: str  # "master" or "replica"
    master_id: str | None
    failing: bool
    slots: tuple[tuple[int, int], ...]

    def owns(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slots)


def root(data_dir: Path) -> Path:
    return data_dir / "redis-cluster"


def ports(data_dir: Path) -> list[int]:
    """The ports of this data dir's cluster nodes, empty before the cluster is first started."""
    try:
        return sorted(int(d.name) for d in root(data_dir).iterdir() if d.is_dir() and d.name.isdigit())
    except FileNotFoundError:
        return []


def pid(data_dir: Path, port: int) -> int | None:
    """The pid of the node on `port`, or None if it is not running."""
    found = read_int(root(data_dir) / str(port) / "redis.pid")
    return found if found is not None and alive(found, "redis-server") else None


def replication_password(saved: Credentials) -> str:
    # Derived from the admin's, so the credentials file keeps its shape; it does not reveal the admin's password.
    return hmac.new(saved.redis_admin_password.encode(), b"redis replication", hashlib.sha256).hexdigest()


def up(data_dir: Path, binary: str, cli: str, first_port: int, saved: Credentials) -> list[int]:
    """Start every node not running, create the cluster the first time, and wait until it is whole."""
    known = ports(data_dir)
    chosen = known or list(range(first_port, first_port + NODES))
    if chosen[0] < 1024 or chosen[-1] > HIGHEST_PORT:
        raise ServicesError(f"Redis Cluster ports must be between 1024 and {HIGHEST_PORT} (bus ports are +10000)")
    user = server_user()
    server_dir(data_dir, user, root(data_dir).name)
    for port in chosen:
        if pid(data_dir, port) is None:
            check_port_free(port, "a Redis Cluster node")
            check_port_free(port + BUS_OFFSET, "a Redis Cluster node's bus")
            workdir = root(data_dir) / str(port)
            redis_server.start(binary, workdir, port, _node_config(workdir, port, saved), saved, user)
    if _fresh(chosen, saved):
        _create(cli, chosen, saved)
    what = f"the Redis Cluster to serve every slot (node logs: {root(data_dir)}/*/redis.log)"
    wait_until(lambda: whole(chosen, saved), START_TIMEOUT_S, what, None)
    return chosen


def _node_config(workdir: Path, port: int, saved: Credentials) -> list[str]:
    return [
        *redis_server.server_config(workdir, port, saved),
        f"user {REPLICATION_USER} reset on >{replication_password(saved)} +psync +replconf +ping",
        f"masteruser {REPLICATION_USER}",
        f"masterauth {replication_password(saved)}",
        "cluster-enabled yes",
        "cluster-config-file nodes.conf",
        f"cluster-node-timeout {NODE_TIMEOUT_MS}",
        # A dead master stops its own slots only: the other partitions keep taking and deciding requests.
        "cluster-require-full-coverage no",
        # A (re)joining replica syncs at once instead of waiting 5 s for others to share the transfer.
        "repl-diskless-sync-delay 0",
    ]


def _fresh(chosen: list[int], saved: Credentials) -> bool:
    """True while no node knows another: the cluster is yet to be created."""
    try:
        return all(cluster_info(port, saved).get("cluster_known_nodes") == "1" for port in chosen)
    except redis.AuthenticationError:
        raise ServicesError(_REFUSED) from None


def _create(cli: str, chosen: list[int], saved: Credentials) -> None:
    create = [cli, "--user", REDIS_ADMIN_USER, "--cluster", "create", *(f"127.0.0.1:{port}" for port in chosen)]
    create += ["--cluster-replicas", str(NODES // MASTERS - 1), "--cluster-yes"]
    # The password in the environment: on the command line every local user would see it in `ps`.
    run(create, "redis-cli --cluster create", None, env=os.environ | {"REDISCLI_AUTH": saved.redis_admin_password})


def whole(chosen: list[int], saved: Credentials) -> bool:
    """Every node running, serving every slot and seeing the same three masters, each with a replica in sync."""
    replicated: set[int] = set()
    try:
        for port in chosen:
            info = cluster_info(port, saved)
            if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(SLOTS):
                return False
            if not _agreed(nodes(port, saved), len(chosen)):
                return False
            answer = role(port, saved)
            if answer[0] == "slave" and answer[3] == "connected":  # connected: the initial sync is done
                replicated.add(int(answer[2]))
    except redis.AuthenticationError:
        raise ServicesError(_REFUSED) from None
    except redis.ConnectionError:
        return False
    return len(replicated) == MASTERS


def _agreed(view: list[Node], count: int) -> bool:
    """One node's view is settled: every node up, three masters with slots, each of the others replicating one."""
    masters = {node.node_id for node in view if node.role == "master" and node.slots}
    replicas = [node for node in view if node.role == "replica"]
    healthy = len(view) == count and not any(node.failing for node in view)
    followed = {node.master_id for node in replicas}
    return healthy and len(masters) == MASTERS and len(replicas) == count - MASTERS and followed == masters


def nodes(port: int, saved: Credentials) -> list[Node]:
    """The cluster as the node on `port` sees it."""
    with _admin(port, saved) as client:
        text = str(client.execute_command("CLUSTER", "NODES"))
    found = []
    for line in text.splitlines():
        node_id, address, flags, master, *_, link = line.split()[:8]
        ranges = [r.split("-") for r in line.split()[8:] if not r.startswith("[")]  # [...]: slots in migration
        found.append(
            Node(
                node_id=node_id,
                port=int(address.split("@")[0].rsplit(":", 1)[1]),
                role="master" if "master" in flags.split(",") else "replica",
                master_id=None if master == "-" else master,
                failing="fail" in flags.split(",") or "fail?" in flags.split(",") or link != "connected",
                slots=tuple((int(r[0]), int(r[-1])) for r in ranges),
            )
        )
    return found


def cluster_info(port: int, saved: Credentials) -> dict[str, str]:
    """CLUSTER INFO of the node on `port`: cluster_state, cluster_slots_ok, cluster_known_nodes..."""
    with _admin(port, saved) as client:
        text = str(client.execute_command("CLUSTER", "INFO"))
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def role(port: int, saved: Credentials) -> list[str]:
    """ROLE of the node on `port`: ["master", ...] or ["slave", host, master port, link state, offset]."""
    with _admin(port, saved) as client:
        return [str(part) for part in client.execute_command("ROLE")]


def _admin(port: int, saved: Credentials) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        username=REDIS_ADMIN_USER,
        password=saved.redis_admin_password,
        decode_responses=True,
        socket_timeout=2,
        socket_connect_timeout=2,
        retry=redis_server.NO_RETRY,
    )


def down(data_dir: Path) -> None:
    # All at once: a replica outliving its master by the node timeout would take over its slots.
    redis_server.stop([found for port in ports(data_dir) if (found := pid(data_dir, port)) is not None])


def status(data_dir: Path, saved: Credentials | None) -> str:
    chosen = ports(data_dir)
    running = [port for port in chosen if pid(data_dir, port) is not None]
    if not running:
        return "stopped"
    addresses = ",".join(f"127.0.0.1:{port}" for port in chosen)
    if len(running) < len(chosen):
        return f"{len(running)} of {len(chosen)} nodes running ({addresses})"
    try:
        state = "ok" if saved is not None and whole(chosen, saved) else "not ready"
    except redis.RedisError:
        state = "not answering"
    return f"running on {addresses} ({state})"


def free_cluster_port() -> int:
    """A first port for a cluster whose node and bus ports are all free and below the ephemeral range
    (so that no outgoing connection takes one of them meanwhile)."""
    ephemeral = read_int(Path("/proc/sys/net/ipv4/ip_local_port_range")) or 32768
    for _ in range(100):
        first = random.randrange(10000, max(min(ephemeral, HIGHEST_PORT + 1) - BUS_OFFSET - NODES, 10001))
        try:
            for port in range(first, first + NODES):
                check_port_free(port, "")
                check_port_free(port + BUS_OFFSET, "")
        except ServicesError:
            continue
        return first
    raise ServicesError("found no free ports for a Redis Cluster")
