"""A real single-node SLURM cluster (Debian's munge and slurm-wlm, as root).

Used by tests/test_slurm.py and bench/bench_slurm.py.

Everything lives under one temporary folder (a munge key and socket, slurm.conf, state, spool,
logs); slurmctld and slurmd run in the foreground as children of the test and are stopped by PID.
Commands (sbatch, squeue, sinfo) find the cluster through SLURM_CONF in `env`.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MUNGED = "/usr/sbin/munged"
SLURMCTLD = "/usr/sbin/slurmctld"
SLURMD = "/usr/sbin/slurmd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_line() -> str:
    """This machine as slurmd sees it (`slurmd -C`): CPUs, cores, memory."""
    out = subprocess.run([SLURMD, "-C"], capture_output=True, text=True, check=True).stdout
    line = out.splitlines()[0]
    memory = int(re.search(r"RealMemory=(\d+)", line).group(1))
    return re.sub(r"RealMemory=\d+", f"RealMemory={max(1000, memory - 1024)}", line)


def _wait(predicate, timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p}:\n{p.read_text()[-2000:]}" for p in logs if p.exists())
            raise RuntimeError(f"{what} did not happen in {timeout:g} s\n{tails}")
        time.sleep(0.2)


@contextmanager
def slurm_cluster(root: Path) -> Iterator[dict[str, str]]:
    """Start munged, slurmctld and slurmd; yield the environment for SLURM commands."""
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool", "log", "munge"):
        (root / sub).mkdir(exist_ok=True)
    os.chmod(root / "munge", 0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(secrets.token_bytes(128))
    os.chmod(key, 0o600)
    munge_socket = root / "munge" / "munge.socket"
    host = socket.gethostname()
    node = _node_line()
    node_name = re.search(r"NodeName=(\S+)", node).group(1)
    conf = root / "slurm.conf"
    conf.write_text(f"""ClusterName=miltest
SlurmctldHost={host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool"}
SlurmctldPidFile={root / "slurmctld.pid"}
SlurmdPidFile={root / "slurmd.pid"}
SlurmctldLogFile={root / "log" / "slurmctld.log"}
SlurmdLogFile={root / "log" / "slurmd.log"}
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=600
{node} State=UNKNOWN
PartitionName=test Nodes={node_name} Default=YES MaxTime=INFINITE State=UP
""")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    logs = [root / "log" / "slurmctld.log", root / "log" / "slurmd.log", root / "munged.log"]
    procs: list[subprocess.Popen] = []
    try:
        procs.append(
            subprocess.Popen(
                [
                    MUNGED,
                    "--foreground",
                    "--force",
                    f"--socket={munge_socket}",
                    f"--key-file={key}",
                    f"--pid-file={root / 'munged.pid'}",
                    f"--log-file={root / 'munged.log'}",
                    f"--seed-file={root / 'munge' / 'seed'}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        _wait(munge_socket.exists, 20, "munged's socket", logs)
        procs.append(
            subprocess.Popen(
                [SLURMCTLD, "-D", "-c", "-f", str(conf)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        procs.append(
            subprocess.Popen(
                [SLURMD, "-D", "-f", str(conf), "-N", node_name],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

        def idle() -> bool:
            out = subprocess.run(
                ["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True
            )
            return out.returncode == 0 and out.stdout.strip().startswith("idle")

        _wait(idle, 60, "the node becoming idle", logs)
        yield env
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
