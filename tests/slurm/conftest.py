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
# Opt-in accounting (sacct): slurmdbd + a private MariaDB, +~200 MB of packages and ~10 s.
ACCOUNTING_ENV = "CELLMAP_SLURM_ACCOUNTING"
ACCOUNTING_PACKAGES = ["slurmdbd", "mariadb-server"]
ACCOUNTING_BINARIES = ["slurmdbd", "mariadbd", "mariadb-install-db", "mariadb", "sacct", "sacctmgr"]
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
            "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


def _missing_binaries(binaries) -> list[str]:
    return [b for b in binaries if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]


def _install_packages(packages, binaries) -> str | None:
    """Install Debian packages with apt-get when `binaries` are missing; None or the reason."""
    missing = _missing_binaries(binaries)
    if not missing:
        return None
    if shutil.which("apt-get") is None:
        return f"SLURM binaries {missing} missing and apt-get is not available"
    if os.geteuid() != 0:
        return f"SLURM binaries {missing} missing and not running as root (apt-get needs root)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            return f"{' '.join(cmd)} failed: {proc.stderr.strip()[-500:]}"
    missing = _missing_binaries(binaries)
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
    accounting: bool = False

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


def _write_conf(root: Path, node: str, munge_socket: Path,
                dbd_port: int | None = None) -> tuple[Path, int]:
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
        *(["AccountingStorageType=accounting_storage/slurmdbd",
           "AccountingStorageHost=127.0.0.1", f"AccountingStoragePort={dbd_port}",
           f"AccountingStoragePass={munge_socket}"] if dbd_port else
          ["AccountingStorageType=accounting_storage/none"]),
        "JobCompType=jobcomp/none",
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


def _start_accounting(root: Path, munge_socket: Path, cluster: "LocalSlurm", dbd_port: int) -> None:
    """A private MariaDB and slurmdbd listening on `dbd_port` (as in reference/local-slurm.md)."""
    db = root / "mariadb"
    db.mkdir()
    sock, db_port = db / "mysql.sock", _free_port()
    subprocess.run(["mariadb-install-db", f"--datadir={db / 'data'}", "--user=root",
                    "--auth-root-authentication-method=socket", "--skip-test-db"],
                   capture_output=True, check=True, timeout=300)
    cluster.procs.append(_start(
        [_sbin("mariadbd"), f"--datadir={db / 'data'}", f"--socket={sock}", f"--port={db_port}",
         "--bind-address=127.0.0.1", "--skip-name-resolve", "--innodb-buffer-pool-size=64M",
         f"--pid-file={db / 'mariadbd.pid'}", f"--log-error={db / 'error.log'}", "--user=root"],
        db / "mariadbd.out", cluster.env))

    def sql(statement: str) -> bool:
        return subprocess.run(["mariadb", f"--socket={sock}", "-u", "root", "-e", statement],
                              capture_output=True).returncode == 0

    _wait_for("MariaDB", lambda: sql("select 1"), 60, cluster.procs)
    if not sql("CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; "
               "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"):
        raise RuntimeError("cannot create the slurm database user")
    dbd_conf = root / "slurmdbd.conf"
    dbd_conf.write_text("\n".join([
        "AuthType=auth/munge", f"AuthInfo=socket={munge_socket}", "DbdHost=localhost",
        "DbdAddr=127.0.0.1", f"DbdPort={dbd_port}", "SlurmUser=root",
        "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1",
        f"StoragePort={db_port}", "StorageUser=slurm", "StoragePass=slurm",
        "StorageLoc=slurm_acct_db", f"LogFile={root / 'log' / 'slurmdbd.log'}",
        f"PidFile={root / 'slurmdbd.pid'}"]) + "\n")
    os.chmod(dbd_conf, 0o600)
    cluster.procs.append(_start([_sbin("slurmdbd"), "-D"], root / "log" / "slurmdbd.out",
                                cluster.env))
    _wait_for("slurmdbd", lambda: subprocess.run(
        ["sacctmgr", "-n", "list", "cluster"], env=cluster.env, capture_output=True
    ).returncode == 0, 60, cluster.procs)


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


def start_local_slurm(root: Path, accounting: bool = False) -> LocalSlurm:
    """Start munged[, MariaDB, slurmdbd], slurmctld and slurmd in the foreground (as background
    processes) under `root`; every file of the cluster lives there."""
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
    dbd_port = _free_port() if accounting else None
    conf, real_memory_mb = _write_conf(root, node, sock, dbd_port)
    cluster = LocalSlurm(root=root, conf=conf, node=node, real_memory_mb=real_memory_mb,
                         accounting=accounting)
    env = cluster.env
    try:
        cluster.procs.append(_start(
            [_sbin("munged"), "-F", "-f", f"--key-file={key}", f"--socket={sock}",
             f"--pid-file={munge_dir / 'munged.pid'}", f"--log-file={munge_dir / 'munged.log'}",
             f"--seed-file={munge_dir / 'munged.seed'}"], munge_dir / "munged.out", env))
        _wait_for("munged", lambda: subprocess.run(
            ["munge", "-S", str(sock), "-n"], capture_output=True).returncode == 0, 15,
            cluster.procs)
        if accounting:
            _start_accounting(root, sock, cluster, dbd_port)
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
    if os.geteuid() != 0:
        pytest.skip("no local SLURM: the test cluster runs slurmctld/slurmd as root (SlurmUser=root)"
                    " and installs its packages with apt-get; run the tests as root")
    accounting = os.environ.get(ACCOUNTING_ENV, "") not in ("", "0")
    t0 = time.monotonic()
    reason = _install_packages(PACKAGES, BINARIES)
    if reason is None and accounting:
        reason = _install_packages(ACCOUNTING_PACKAGES, ACCOUNTING_BINARIES)
    install_s = time.monotonic() - t0
    if reason:
        pytest.skip(f"no local SLURM: {reason}")
    root = Path(tmp_path_factory.mktemp("slurm"))
    cluster = start_local_slurm(root, accounting=accounting)
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
