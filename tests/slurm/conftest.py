"""A real, throwaway single-node SLURM for the tests: installed, started and stopped by PID here."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGES = ["munge", "slurmctld", "slurmd", "slurm-client"]
BINARIES = ["munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel"]
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
            "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


def _missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None
            and not Path("/usr/sbin", b).exists()]


def _install_packages() -> str | None:
    """Install the Debian SLURM packages with apt-get; returns None on success or the reason."""
    if not _missing_binaries():
        return None
    if shutil.which("apt-get") is None:
        return f"SLURM binaries {_missing_binaries()} missing and apt-get is not available"
    if os.geteuid() != 0:
        return f"SLURM binaries {_missing_binaries()} missing and not running as root"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            return f"{' '.join(cmd)} failed: {proc.stderr.strip()[-500:]}"
    missing = _missing_binaries()
    return f"still missing after apt-get: {missing}" if missing else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sbin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


@dataclass
class LocalSlurm:
    """A running single-node cluster: its folder, slurm.conf, node name and daemon processes."""

    root: Path
    conf: Path
    node: str
    real_memory_mb: int
    procs: list = field(default_factory=list)
    bringup_s: float = 0.0

    @property
    def env(self) -> dict:
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def run(self, *cmd: str, check: bool = True) -> str:
        proc = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
        return proc.stdout

    def job_fields(self, job_id: str) -> list[dict]:
        """`scontrol show job -o` records (one per array task) as dicts."""
        out = self.run("scontrol", "show", "job", "-o", str(job_id), check=False)
        records = []
        for line in out.splitlines():
            records.append(dict(re.findall(r"(\w+)=(\S*)", line)))
        return records

    def wait(self, job_id: str, timeout_s: float = 120, states=TERMINAL) -> list[dict]:
        """Poll until every record of the job is in a terminal state; return the records."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            records = self.job_fields(job_id)
            if records and all(r.get("JobState") in states for r in records):
                return records
            time.sleep(0.3)
        raise TimeoutError(f"job {job_id} not finished after {timeout_s} s: {self.job_fields(job_id)}")

    def stop(self) -> None:
        subprocess.run(["scancel", "--user", "root"], env=self.env, capture_output=True, timeout=30)
        time.sleep(0.5)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _write_conf(root: Path, node: str, munge_socket: Path) -> tuple[Path, int]:
    node_line = subprocess.run([_sbin("slurmd"), "-C"], capture_output=True, text=True,
                               check=True).stdout.splitlines()[0]
    node_line = re.sub(r"\s*RealMemory=\d+", "", node_line)
    mem_total_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    real_memory_mb = int(mem_total_kb / 1024 * 0.8)
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    lines = [
        "ClusterName=ci",
        f"SlurmctldHost={node}(127.0.0.1)",
        "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        f"StateSaveLocation={root / 'state'}", f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}", f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        "MailProg=/bin/true", "MpiDefault=none",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/linux", "JobAcctGatherFrequency=task=1",
        "JobAcctGatherParams=OverMemoryKill",
        "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
        "EnforcePartLimits=ALL", "DefMemPerCPU=1024", "ReturnToService=2",
        "MinJobAge=3600",
        f"{node_line} NodeAddr=127.0.0.1 RealMemory={real_memory_mb} State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
    ]
    conf = root / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf, real_memory_mb


def _start(cmd: list[str], log: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def _wait_for(what: str, check, timeout_s: float, procs: list) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        dead = [p.args[0] for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{dead} exited while waiting for {what}")
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout_s} s")


def start_local_slurm(root: Path) -> LocalSlurm:
    """Start munged, slurmctld and slurmd in the foreground (as background processes) under root."""
    t0 = time.monotonic()
    node = socket.gethostname().split(".")[0]
    munge_dir = root / "munge"
    munge_dir.mkdir(parents=True)
    os.chmod(munge_dir, 0o700)
    key = munge_dir / "munge.key"
    if subprocess.run([_sbin("mungekey"), "-c", "-b", "1024", "-k", str(key)],
                      capture_output=True).returncode != 0:
        key.write_bytes(os.urandom(128))
    os.chmod(key, 0o600)
    sock = munge_dir / "munge.sock"
    conf, real_memory_mb = _write_conf(root, node, sock)
    cluster = LocalSlurm(root=root, conf=conf, node=node, real_memory_mb=real_memory_mb)
    env = cluster.env
    try:
        cluster.procs.append(_start(
            [_sbin("munged"), "-F", "-f", f"--key-file={key}", f"--socket={sock}",
             f"--pid-file={munge_dir / 'munged.pid'}", f"--log-file={munge_dir / 'munged.log'}",
             f"--seed-file={munge_dir / 'munged.seed'}"], munge_dir / "munged.out", env))
        _wait_for("munged", lambda: subprocess.run(
            ["munge", "-S", str(sock), "-n"], capture_output=True).returncode == 0, 15,
            cluster.procs)
        cluster.procs.append(_start([_sbin("slurmctld"), "-D", "-i"],
                                    root / "log" / "slurmctld.out", env))
        cluster.procs.append(_start([_sbin("slurmd"), "-D"], root / "log" / "slurmd.out", env))

        def idle() -> bool:
            out = subprocess.run(["scontrol", "show", "node", node], env=env,
                                 capture_output=True, text=True).stdout
            return "State=IDLE" in out

        _wait_for("node IDLE", idle, 60, cluster.procs)
    except Exception:
        cluster.stop()
        raise
    cluster.bringup_s = time.monotonic() - t0
    return cluster


@pytest.fixture(scope="session")
def local_slurm(tmp_path_factory):
    """The running cluster; SLURM_CONF is exported for the session so client tools find it."""
    t0 = time.monotonic()
    reason = _install_packages()
    install_s = time.monotonic() - t0
    if reason:
        pytest.skip(f"no local SLURM: {reason}")
    root = Path(tmp_path_factory.mktemp("slurm"))
    cluster = start_local_slurm(root)
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    print(f"\nlocal SLURM up in {cluster.bringup_s:.1f} s (package check/install {install_s:.1f} s; "
          f"{cluster.conf})", file=sys.stderr)
    try:
        yield cluster
    finally:
        cluster.stop()
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
