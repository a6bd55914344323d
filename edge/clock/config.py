"""ptp4l / phc2sys configuration from a hardware profile, and the run directory of an instance.

Each instance (one interface) owns ``<run base>/ptp-<iface>/``: ptp4l.conf, the pmc socket
ptp4l.sock, logs, the supervisor's pid and status files. The base is $HUSHLINK_RUN_DIR or
/run/hushlink: never /etc, so the system's own linuxptp files are left alone. Network
namespaces share the filesystem, so instances in two namespaces of one machine coexist as long
as their interface names differ.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from edge.errors import HushlinkError
from edge.profile import PtpSettings

ROLES = ("master", "slave")
_IFACE_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


class ClockError(HushlinkError):
    """linuxptp missing, an interface that does not exist, no root, an instance not running."""


@dataclass(frozen=True)
class Timestamping:
    """What ``ethtool -T`` says the interface can do."""

    hardware: bool  # hardware-transmit + hardware-receive + a PTP hardware clock
    software: bool  # software-transmit + software-receive
    phc_index: int | None  # /dev/ptpN, when there is one

    @property
    def mode(self) -> str:
        return "hardware" if self.hardware else "software"


@dataclass(frozen=True)
class ClockConfig:
    """One ptp4l instance, everything needed to write its config and run it."""

    role: str  # master | slave
    iface: str
    run_dir: Path
    timestamping: str = "software"  # hardware | software
    domain: int = 0
    transport: str = "UDPv4"
    delay_mechanism: str = "E2E"
    priority1: int = 128
    free_running: bool = False  # measure only, never steer a clock (tests, shared clocks)
    log_announce_interval: int = 1  # log2 s
    announce_receipt_timeout: int = 3

    @property
    def uds(self) -> Path:
        return self.run_dir / "ptp4l.sock"

    @property
    def ptp4l_conf(self) -> Path:
        return self.run_dir / "ptp4l.conf"

    @property
    def use_phc2sys(self) -> bool:
        """With hardware timestamping ptp4l steers the NIC's clock; phc2sys then steers the
        system clock from it (a slave) or the NIC clock from the system clock (a master)."""
        return self.timestamping == "hardware" and not self.free_running


def run_base() -> Path:
    return Path(os.environ.get("HUSHLINK_RUN_DIR", "/run/hushlink"))


def run_dir_for(iface: str) -> Path:
    check_iface_name(iface)
    return run_base() / f"ptp-{iface}"


def check_iface_name(iface: str) -> None:
    if not _IFACE_RE.match(iface):
        raise ClockError(f"invalid interface name {iface!r}")


def require_linuxptp(*tools: str) -> dict[str, str]:
    """Paths of the linuxptp tools; a clear error when the package is not installed."""
    found = {t: shutil.which(t) or shutil.which(t, path="/usr/sbin:/sbin") for t in tools}
    missing = [t for t, p in found.items() if not p]
    if missing:
        raise ClockError(f"{', '.join(missing)} not found: install linuxptp "
                         "(apt-get install linuxptp)")
    return found  # type: ignore[return-value]


def require_iface(iface: str) -> None:
    """The interface must exist in this network namespace."""
    check_iface_name(iface)
    try:
        socket.if_nametoindex(iface)
    except OSError:
        raise ClockError(f"network interface {iface!r} not found in this network namespace "
                         "(see `ip link`)") from None


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise ClockError(f"{what} needs root (ptp4l opens PTP ports 319/320 and may steer "
                         "the clock): run it with sudo")


def parse_ethtool_t(text: str) -> Timestamping:
    """Parse ``ethtool -T IFACE`` output."""
    caps = set(re.findall(r"^\s*(\S+-(?:transmit|receive|raw-clock|system-clock))",
                          text, flags=re.M))
    m = re.search(r"PTP Hardware Clock:\s*(\d+)", text)
    phc = int(m.group(1)) if m else None
    hw = {"hardware-transmit", "hardware-receive"} <= caps and phc is not None
    sw = {"software-transmit", "software-receive"} <= caps
    return Timestamping(hardware=hw, software=sw, phc_index=phc)


def probe_timestamping(iface: str) -> Timestamping:
    """Ask the NIC (``ethtool -T``) what it can timestamp; software when ethtool is absent."""
    exe = shutil.which("ethtool") or shutil.which("ethtool", path="/usr/sbin:/sbin")
    if not exe:
        return Timestamping(hardware=False, software=True, phc_index=None)
    r = subprocess.run([exe, "-T", iface], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        return Timestamping(hardware=False, software=True, phc_index=None)
    return parse_ethtool_t(r.stdout)


def make_config(settings: PtpSettings, role: str, iface: str | None = None, *,
                timestamping: str | None = None, free_running: bool = False,
                run_dir: Path | None = None) -> ClockConfig:
    """A ClockConfig from the profile's ``[ptp]`` table and the command-line options.

    ``timestamping=None`` probes the interface; the master uses the profile's
    grandmaster_priority as priority1 so it wins the best-master election.
    """
    if role not in ROLES:
        raise ClockError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    iface = iface or settings.iface
    check_iface_name(iface)
    if timestamping is None:
        ts = probe_timestamping(iface)
        if not ts.hardware and not ts.software:
            raise ClockError(f"{iface} supports neither hardware nor software timestamping "
                             "(ethtool -T)")
        timestamping = ts.mode
    return ClockConfig(
        role=role, iface=iface, run_dir=run_dir or run_dir_for(iface),
        timestamping=timestamping, domain=settings.domain, transport=settings.transport,
        delay_mechanism=settings.delay_mechanism,
        priority1=settings.grandmaster_priority if role == "master" else settings.priority1,
        free_running=free_running)


def render_ptp4l(cfg: ClockConfig) -> str:
    """The ptp4l.conf text of one instance (the interface goes on the command line)."""
    lines = [
        "# Written by edge-denoise clock start; regenerated on every start.",
        "[global]",
        f"domainNumber {cfg.domain}",
        f"network_transport {cfg.transport}",
        f"delay_mechanism {cfg.delay_mechanism}",
        f"time_stamping {cfg.timestamping}",
        f"priority1 {cfg.priority1}",
        f"slaveOnly {1 if cfg.role == 'slave' else 0}",
        f"logAnnounceInterval {cfg.log_announce_interval}",
        f"announceReceiptTimeout {cfg.announce_receipt_timeout}",
        f"uds_address {cfg.uds}",
        "summary_interval 0",
    ]
    if cfg.free_running:
        # Measure the offset but never adjust the clock: with network namespaces on one
        # machine both ptp4l share CLOCK_REALTIME, and a steering slave would move the very
        # clock the master reads.
        lines.append("free_running 1")
    return "\n".join(lines) + "\n"


def ptp4l_argv(cfg: ClockConfig, exe: str = "ptp4l") -> list[str]:
    ts_flag = "-H" if cfg.timestamping == "hardware" else "-S"
    return [exe, "-f", str(cfg.ptp4l_conf), "-i", cfg.iface, ts_flag, "-m"]


def phc2sys_argv(cfg: ClockConfig, exe: str = "phc2sys") -> list[str]:
    """A slave: system clock follows the NIC clock; a master: the NIC clock follows the system
    clock (the grandmaster's time source). ``-w`` waits for ptp4l's UTC offset."""
    if cfg.role == "slave":
        return [exe, "-s", cfg.iface, "-c", "CLOCK_REALTIME", "-w", "-z", str(cfg.uds),
                "-n", str(cfg.domain), "-m"]
    return [exe, "-s", "CLOCK_REALTIME", "-c", cfg.iface, "-O", "0", "-z", str(cfg.uds),
            "-n", str(cfg.domain), "-m"]


def write_config(cfg: ClockConfig) -> Path:
    """Write ptp4l.conf atomically into the run directory; returns its path."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    tmp = cfg.ptp4l_conf.with_suffix(".conf.tmp")
    tmp.write_text(render_ptp4l(cfg))
    os.replace(tmp, cfg.ptp4l_conf)
    return cfg.ptp4l_conf


def with_fast_announce(cfg: ClockConfig) -> ClockConfig:
    """Announce every second with a 2-interval timeout: a master is elected in ~2 s instead
    of ~7 s (labs and tests; the profile defaults follow the default PTP profile)."""
    return replace(cfg, log_announce_interval=0, announce_receipt_timeout=2)
