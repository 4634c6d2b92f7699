"""A real Spark standalone cluster on loopback (master + N workers) from the pip-installed PySpark.

The closest thing to multi-node one machine offers: separate master, worker and executor JVMs
and executor Python processes. Started processes are recorded (pid file in the state dir) and
``stop`` ends exactly those, by process id.

    python -m tools.cluster start [--workers 2 --cores 1 --memory 3g --state-dir .cluster]
    python -m tools.cluster stop  [--state-dir .cluster]
    python -m tools.cluster kill-worker|restart-worker --index 1   (fault drills)
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

STATE_FILE = "cluster.json"


@dataclass
class ClusterState:
    master_url: str
    master_pid: int
    worker_pids: list[int] = field(default_factory=list)
    state_dir: str = ".cluster"
    web_ui_port: int = 8080
    cores: int = 1
    memory: str = "3g"

    def save(self) -> None:
        Path(self.state_dir, STATE_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, state_dir: str) -> Optional["ClusterState"]:
        path = Path(state_dir, STATE_FILE)
        return cls(**json.loads(path.read_text())) if path.exists() else None


def spark_home() -> str:
    import pyspark

    return os.path.dirname(pyspark.__file__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float, proc: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}; see {log}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"{what} did not listen on port {port} within {timeout:.0f}s; see {log}")


def _spawn(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    handle = open(log, "ab")
    # A new session, so stopping the cluster never signals the caller's process group.
    return subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _registered_workers(ui_port: int) -> int:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as resp:
            return sum(1 for w in json.load(resp).get("workers", []) if w.get("state") == "ALIVE")
    except OSError:
        return 0


def start(workers: int = 2, cores: int = 1, memory: str = "3g", state_dir: str = ".cluster",
          port: int = 7077, timeout: float = 90.0) -> ClusterState:
    """Start a master and ``workers`` workers on 127.0.0.1; return once all workers registered."""
    state_dir = str(Path(state_dir).resolve())
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    existing = ClusterState.load(state_dir)
    if existing is not None and _alive(existing.master_pid):
        raise RuntimeError(f"a cluster started from {state_dir} is still running (master pid {existing.master_pid}); "
                           "stop it first")
    env = _env(state_dir)
    ui_port = _free_port()
    master_log = Path(state_dir, "master.log")
    master = _spawn([_spark_class(), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                     "--port", str(port), "--webui-port", str(ui_port)], master_log, env)
    state = ClusterState(master_url=f"spark://127.0.0.1:{port}", master_pid=master.pid,
                         state_dir=state_dir, web_ui_port=ui_port, cores=cores, memory=memory)
    state.save()
    try:
        _wait_port(port, timeout, master, "spark master", master_log)
        for i in range(workers):
            state.worker_pids.append(_spawn_worker(state, i).pid)
            state.save()
        _wait_workers(state, workers, timeout)
    except BaseException:
        stop(state_dir)
        raise
    return state


def _env(state_dir: str) -> dict:
    env = dict(os.environ, SPARK_HOME=spark_home(), PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1",
               SPARK_LOG_DIR=str(Path(state_dir, "logs")), SPARK_NO_DAEMONIZE="1")
    Path(env["SPARK_LOG_DIR"]).mkdir(exist_ok=True)
    return env


def _spark_class() -> str:
    return str(Path(spark_home(), "bin", "spark-class"))


def _spawn_worker(state: ClusterState, index: int) -> subprocess.Popen:
    work_dir = Path(state.state_dir, f"worker{index}")
    work_dir.mkdir(exist_ok=True)
    env = dict(_env(state.state_dir), SPARK_WORKER_DIR=str(work_dir))
    return _spawn([_spark_class(), "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                   "--cores", str(state.cores), "--memory", state.memory, "--webui-port", str(_free_port()),
                   "--work-dir", str(work_dir), state.master_url], Path(state.state_dir, f"worker{index}.log"), env)


def _wait_workers(state: ClusterState, workers: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while _registered_workers(state.web_ui_port) < workers:
        if time.time() > deadline:
            raise TimeoutError(f"only {_registered_workers(state.web_ui_port)} of {workers} workers registered; "
                               f"see logs in {state.state_dir}")
        time.sleep(0.5)


def alive_workers(state_dir: str) -> int:
    """How many workers the master currently counts as ALIVE."""
    state = _load(state_dir)
    return _registered_workers(state.web_ui_port)


def restart_worker(state_dir: str, index: int, timeout: float = 90.0) -> int:
    """Start worker ``index`` again (after :func:`kill_worker`); wait until it registers. Returns its pid."""
    state = _load(state_dir)
    if _alive(state.worker_pids[index]):
        raise RuntimeError(f"worker {index} (pid {state.worker_pids[index]}) is still running")
    state.worker_pids[index] = _spawn_worker(state, index).pid
    state.save()
    _wait_workers(state, len(state.worker_pids), timeout)
    return state.worker_pids[index]


def _load(state_dir: str) -> ClusterState:
    state = ClusterState.load(str(Path(state_dir).resolve()))
    if state is None:
        raise RuntimeError(f"no cluster state in {state_dir}")
    return state


def submit_command(master_url: str, wheel: str, job: str, job_args: list[str],
                   python: Optional[str] = None) -> list[str]:
    """README's ``spark-submit`` command for a job script (``jobs/<command>.py``) on a cluster.

    The Delta jar comes from ``--packages`` (same version as the installed delta-spark), the
    package travels as a wheel in ``--py-files``, and executors run ``python`` (default: this
    interpreter). Run it with this interpreter's bin directory first on the PATH: spark-submit
    finds its Spark through the ``python`` it sees.
    """
    import importlib.metadata

    python = python or sys.executable
    delta = importlib.metadata.version("delta-spark")
    return [str(Path(python).parent / "spark-submit"), "--master", master_url,
            "--packages", f"io.delta:delta-spark_2.13:{delta}",
            "--conf", "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension",
            "--conf", "spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog",
            "--conf", f"spark.pyspark.python={python}",
            "--py-files", str(wheel), str(job), *job_args]


def submit_env(python: Optional[str] = None) -> dict:
    """The environment for :func:`submit_command`: the interpreter's bin dir first on the PATH."""
    bin_dir = str(Path(python or sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_GATEWAY")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie (exited, not yet reaped) counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return True


def kill_process(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the process (and its session), then SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
        deadline = time.time() + timeout
        while time.time() < deadline and _alive(pid):
            time.sleep(0.2)
        if not _alive(pid):
            return


def kill_worker(state_dir: str, index: int) -> int:
    """Kill worker ``index`` (and its executors) abruptly, as a dying node would. Returns its pid."""
    pid = _load(state_dir).worker_pids[index]
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return pid


def stop(state_dir: str = ".cluster") -> list[int]:
    """Stop the processes this module started from ``state_dir`` (workers first). Returns their pids."""
    state = ClusterState.load(str(Path(state_dir).resolve()))
    if state is None:
        return []
    pids = list(state.worker_pids) + [state.master_pid]
    for pid in pids:
        kill_process(pid)
    Path(state.state_dir, STATE_FILE).unlink(missing_ok=True)
    return pids


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop", "status", "kill-worker", "restart-worker"])
    parser.add_argument("--index", type=int, default=1, help="worker number for kill-worker / restart-worker")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--memory", default="3g")
    parser.add_argument("--port", type=int, default=7077)
    parser.add_argument("--state-dir", default=".cluster")
    args = parser.parse_args(argv)
    if args.action == "start":
        state = start(args.workers, args.cores, args.memory, args.state_dir, args.port)
        print(f"cluster up: {state.master_url} (master pid {state.master_pid}, workers {state.worker_pids}, "
              f"UI http://127.0.0.1:{state.web_ui_port})")
    elif args.action == "stop":
        pids = stop(args.state_dir)
        print(f"stopped pids {pids}" if pids else "no cluster recorded in " + args.state_dir)
    elif args.action == "kill-worker":
        print(f"killed worker {args.index} (pid {kill_worker(args.state_dir, args.index)}) and its executors")
    elif args.action == "restart-worker":
        print(f"worker {args.index} up again (pid {restart_worker(args.state_dir, args.index)})")
    else:
        state = ClusterState.load(str(Path(args.state_dir).resolve()))
        if state is None or not _alive(state.master_pid):
            print("not running")
            return 1
        print(f"{state.master_url}: {_registered_workers(state.web_ui_port)} workers alive")
    return 0


if __name__ == "__main__":
    sys.exit(main())
