"""Network namespaces for the simulated system: one for the host, one per device, each
device joined to the host's bridge (the switch) by a veth pair, so every device has its own
PTP port and address, and the host's grandmaster reaches all of them from its one port.

Link impairment without netem (this kernel has none, ../shared/RECIPES.md): random drops of
the device's stream with iptables' ``statistic`` match on the host's input, and a ``tbf``
rate cap on the device's egress (a cap below the stream's bitrate queues, then drops).
Rules live inside the namespaces, so deleting them removes every rule too.
"""

from __future__ import annotations

import subprocess

from edge.errors import HushlinkError

SUBNET = "10.77.0"  # inside the namespaces only: never visible to the machine's own network


class NetError(HushlinkError):
    pass


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise NetError(f"{' '.join(cmd)}: {(r.stderr or r.stdout).strip()}")
    return r


def names(prefix: str, n: int) -> dict:
    """Namespace and interface names (interfaces: at most 15 characters)."""
    return {"host_ns": f"{prefix}-host", "bridge": f"{prefix}br", "nic": f"{prefix}hst",
            "nic_peer": f"{prefix}hsp",
            "host_ip": f"{SUBNET}.1",
            "devices": [{"index": i, "ns": f"{prefix}-d{i}", "iface": f"{prefix}d{i}",
                         "peer": f"{prefix}h{i}", "ip": f"{SUBNET}.{10 + i}"}
                        for i in range(1, n + 1)]}


def listed(prefix: str) -> list[str]:
    """Namespaces of this prefix that exist now."""
    out = sh("ip", "netns", "list", check=False).stdout
    return [ln.split()[0] for ln in out.splitlines()
            if ln.split() and ln.split()[0].startswith(f"{prefix}-")]


def add_host(net: dict) -> None:
    """The host's namespace: a bridge (the switch) and the host's own port on it, a veth
    (``nic``) carrying the host's address. ptp4l needs the veth: a bridge interface has no
    software timestamping."""
    ns, br = net["host_ns"], net["bridge"]
    sh("ip", "netns", "add", ns)
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", ns, "link", "add", br, "type", "bridge")
    sh("ip", "-n", ns, "link", "set", br, "up")
    sh("ip", "-n", ns, "link", "add", net["nic"], "type", "veth", "peer", "name",
       net["nic_peer"])
    sh("ip", "-n", ns, "link", "set", net["nic_peer"], "master", br)
    sh("ip", "-n", ns, "link", "set", net["nic_peer"], "up")
    sh("ip", "-n", ns, "addr", "add", f"{net['host_ip']}/24", "dev", net["nic"])
    sh("ip", "-n", ns, "link", "set", net["nic"], "up")


def add_device(net: dict, dev: dict) -> None:
    ns, hns = dev["ns"], net["host_ns"]
    sh("ip", "netns", "add", ns)
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", ns, "link", "add", dev["iface"], "type", "veth", "peer", "name", dev["peer"],
       "netns", hns)
    sh("ip", "-n", ns, "addr", "add", f"{dev['ip']}/24", "dev", dev["iface"])
    sh("ip", "-n", ns, "link", "set", dev["iface"], "up")
    sh("ip", "-n", hns, "link", "set", dev["peer"], "master", net["bridge"])
    sh("ip", "-n", hns, "link", "set", dev["peer"], "up")


def delete(ns: str) -> None:
    sh("ip", "netns", "del", ns, check=False)  # takes its veths, bridge and rules with it


TAG = "hushlink-impair"


def impair(host_ns: str, dev: dict, port: int, *, loss_pct: float = 0.0,
           rate_kbit: float = 0.0) -> dict:
    """Replace the device's impairment: drop ``loss_pct`` % of its stream packets arriving at
    the host (UDP to ``port``), cap its egress at ``rate_kbit`` (0: no cap)."""
    if not 0 <= loss_pct < 100:
        raise NetError(f"loss must be in [0, 100) %, got {loss_pct}")
    if rate_kbit and rate_kbit < 8:
        raise NetError(f"a rate cap must be at least 8 kbit/s, got {rate_kbit}")
    comment = f"{TAG}-{dev['index']}"
    rules = sh("ip", "netns", "exec", host_ns, "iptables", "-S", "INPUT").stdout
    for ln in rules.splitlines():
        if comment in ln and ln.startswith("-A "):
            sh("ip", "netns", "exec", host_ns, "iptables", "-D", *ln.split()[1:])
    if loss_pct > 0:
        sh("ip", "netns", "exec", host_ns, "iptables", "-A", "INPUT", "-p", "udp", "-s",
           dev["ip"], "--dport", str(port), "-m", "statistic", "--mode", "random",
           "--probability", f"{loss_pct / 100:.4f}", "-m", "comment", "--comment", comment,
           "-j", "DROP")
    sh("ip", "netns", "exec", dev["ns"], "tc", "qdisc", "del", "dev", dev["iface"], "root",
       check=False)
    if rate_kbit:
        sh("ip", "netns", "exec", dev["ns"], "tc", "qdisc", "add", "dev", dev["iface"], "root",
           "tbf", "rate", f"{rate_kbit:g}kbit", "burst", "4kb", "latency", "200ms")
    return {"device": dev["index"], "loss_pct": loss_pct, "rate_kbit": rate_kbit}
