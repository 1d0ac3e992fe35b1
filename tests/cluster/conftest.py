"""The same fixtures as the suite's, but every component speaks to the local Redis Cluster
(REDIS_CLUSTER_NODES): tests imported into this package run unchanged against it."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import courseflow_local as services
import pytest
from redis.cluster import ClusterNode, RedisCluster

from courseflow.platform.config import LocalSettings, PostgresSettings, RedisSettings, Settings, WorkerSettings
from tests.conftest import Servers, reset_database, serving_api


def cluster_client(cluster: services.LocalCluster, admin: bool = False) -> RedisCluster:
    user, password = (
        (cluster.admin_username, cluster.admin_password) if admin else (cluster.app_username, cluster.app_password)
    )
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cluster.nodes],  # type: ignore[no-untyped-call]
        username=user,
        password=password,
    )


def cluster_env(cluster: services.LocalCluster) -> dict[str, str]:
    """What a process needs to use the cluster: the nodes, and the application's user in REDIS_URL."""
    credentials = f"{cluster.app_username}:{quote(cluster.app_password, safe='')}"
    return {
        "REDIS_CLUSTER_NODES": cluster.nodes_setting,
        "REDIS_URL": f"redis://{credentials}@{cluster.nodes[0][0]}:{cluster.nodes[0][1]}/0",
    }


def reset_cluster(servers: Servers, cluster: services.LocalCluster) -> None:
    reset_database(servers.owner_database_url)
    with cluster_client(cluster, admin=True) as admin:
        admin.flushall(target_nodes=RedisCluster.PRIMARIES)


@pytest.fixture
def settings(servers: Servers, redis_cluster: services.LocalCluster) -> Settings:
    reset_cluster(servers, redis_cluster)
    env = cluster_env(redis_cluster)
    return Settings(
        postgres=PostgresSettings(url=servers.database_url, migration_url=servers.owner_database_url),
        redis=RedisSettings(url=env["REDIS_URL"], cluster_nodes=tuple(env["REDIS_CLUSTER_NODES"].split(","))),
        local=LocalSettings(external_servers=True),
        worker=WorkerSettings(block_ms=100, batch_size=50, claim_idle_ms=60_000),
    )


@pytest.fixture
def rds(settings: Settings, redis_cluster: services.LocalCluster) -> Iterator[RedisCluster]:
    with cluster_client(redis_cluster) as client:
        yield client


@pytest.fixture(scope="session")
def api_server(
    servers: Servers, redis_cluster: services.LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real `courseflow api` process using the cluster, in development mode."""
    with serving_api(
        servers, tmp_path_factory.mktemp("cluster-api"), RATE_LIMIT_REGISTRAR="off", **cluster_env(redis_cluster)
    ) as base:
        yield base
