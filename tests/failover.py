"""Failing over a master of the local Redis Cluster on purpose: find it by key, kill it, wait, bring it back."""

from __future__ import annotations

import os
import signal

import courseflow_local as services
import msgspec
from courseflow_local import redis_cluster
from redis.crc import key_slot

from tests.helpers import wait_until


class Shard(msgspec.Struct, frozen=True):
    """The master that owns a slot, and its replica, by port."""

    slot: int
    master: int
    replica: int


def shard_of(cluster: services.LocalCluster, key: str) -> Shard:
    """The master serving `key` and the replica that would take over from it."""
    slot = key_slot(key.encode())
    port = next(p for p in cluster.ports if cluster.pid(p) is not None)
    view = redis_cluster.nodes(port, cluster.credentials)
    master = next(node for node in view if node.role == "master" and node.owns(slot))
    replica = next(node for node in view if node.master_id == master.node_id)
    return Shard(slot=slot, master=master.port, replica=replica.port)


def kill(cluster: services.LocalCluster, port: int) -> None:
    """SIGKILL the node on `port`, as a crash would stop it: no AOF flush, no goodbye to the cluster."""
    pid = cluster.pid(port)
    assert pid is not None, f"no node running on port {port}"
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: cluster.pid(port) is None, timeout=10, what=f"the node on port {port} to die")


def wait_failed_over(cluster: services.LocalCluster, shard: Shard, timeout: float = 30.0) -> None:
    """Wait until the shard's replica is the master of its slot and every live node serves every slot again."""
    live = [port for port in cluster.ports if port != shard.master]

    def failed_over() -> bool:
        if redis_cluster.role(shard.replica, cluster.credentials)[0] != "master":
            return False
        for port in live:
            info = redis_cluster.cluster_info(port, cluster.credentials)
            if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(redis_cluster.SLOTS):
                return False
            view = redis_cluster.nodes(port, cluster.credentials)
            if not any(node.port == shard.replica and node.owns(shard.slot) for node in view):
                return False
        return True

    wait_until(failed_over, timeout, f"port {shard.replica} to take over slot {shard.slot} from port {shard.master}")


def rejoin(cluster: services.LocalCluster, port: int) -> None:
    """Restart the killed node; it finds its slots taken and comes back as a replica (once the cluster is whole)."""
    assert services.up_cluster(cluster.data_dir, cluster.ports[0]) == cluster
    assert redis_cluster.role(port, cluster.credentials)[0] == "slave", f"port {port} came back as a master"
