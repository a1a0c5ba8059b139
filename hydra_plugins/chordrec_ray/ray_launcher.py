r"""A Hydra launcher that runs every job of a multirun as a Ray task: ``hydra/launcher=ray``.

    python -m chordrec.train -m hydra/launcher=ray seed=0,1,2,3     # a local Ray for the sweep
    python -m chordrec.train -m hydra/launcher=ray hydra.launcher.address=127.0.0.1:6379 \
        tracking.uri=http://127.0.0.1:5000 seed=0,1,2,3             # a running Ray cluster

With ``address`` null the launcher starts a local Ray on 127.0.0.1 in a temporary
directory of its own for the sweep and shuts it down (and removes the directory) when
the sweep's process exits; else it joins the cluster whose head listens at ``address``
(``host:port``; this process must run on a node of that cluster). Ray is started or
joined once per process, however many batches a sweeper launches.

Each job is composed here, then runs as one Ray task in a fresh worker process
(``max_calls=1``: no MLflow or torch state passes from one job to the next), asking Ray
for what its own config says: ``trainer.num_threads`` CPUs (0 or null: 1) and one GPU
when ``trainer.device`` is ``cuda`` or ``cuda:N`` (``num_cpus`` and ``num_gpus`` here
override both for every job). A job nobody's node could hold is refused before any
starts. On its node the job runs in the sweep's working directory when that exists there
(else in the worker's), writes its Hydra output to the sweep directory's absolute path,
and its run is tagged with the node: ``ray_node_id`` and ``ray_node_ip`` (added to the
job's ``tracking.tags``).

``launch`` returns when every job has ended. A job that raised comes back as a FAILED
``JobReturn`` carrying its exception, as does a job Ray could not run (its worker died,
say), so the sweeper raises the first failure after the batch while the other jobs
finish. Ctrl-C cancels the jobs still running.

Passwords (``PGPASSWORD``, ``MLFLOW_TRACKING_PASSWORD``...) reach the jobs through the
environment, never in a job's config: a local Ray's workers inherit this process's;
each node of a cluster needs them in the environment ``ray start`` ran in (or a
``~/.pgpass``). The job lines this launcher logs go through
:func:`chordrec.passwords.redact`.

Ray stays on the loopback interface unless the user asks otherwise: wherever this
launcher starts or joins Ray on 127.0.0.1 it sets ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
first, which keeps every Ray listener on 127.0.0.1 (``--node-ip-address 127.0.0.1``
alone does not). Ray is imported only after that, so this module imports it lazily.
"""

import atexit
import ipaddress
import logging
import os
import pickle
import shutil
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job
from hydra.core.utils import setup_globals as setup_hydra_globals
from hydra.errors import CompactHydraException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from chordrec.errors import ConfigError
from chordrec.extras import require_extra
from chordrec.passwords import redact

log = logging.getLogger(__name__)

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""Set before Ray starts on 127.0.0.1: Ray then binds every listener to 127.0.0.1."""

NODE_ID_TAG = "ray_node_id"
NODE_IP_TAG = "ray_node_ip"
"""The run tags naming the Ray node that ran a job (its node id, hex, and its IP)."""

CONNECT_TIMEOUT_S = 5.0
"""How long a cluster's head may take to accept a TCP connection before it counts as
unreachable."""


class LauncherError(ConfigError, CompactHydraException):
    """A launcher setting that cannot work (an address nothing answers at, a job no node
    can hold); Hydra prints its message alone, as one line, and exits with status 1."""


@dataclass
class RayLauncherConf:
    """``hydra/launcher=ray``: the settings of :class:`RayLauncher`."""

    _target_: str = "hydra_plugins.chordrec_ray.ray_launcher.RayLauncher"
    # host:port of a running cluster's head (GCS); None: a local Ray on 127.0.0.1 for the sweep
    address: Optional[str] = None  # noqa: UP045 (OmegaConf reads Optional)
    num_cpus: Optional[float] = None  # noqa: UP045  CPUs per job; None: trainer.num_threads or 1
    num_gpus: Optional[float] = None  # noqa: UP045  GPUs per job; None: 1 on cuda, else 0
    local_cpus: Optional[int] = None  # noqa: UP045  CPUs of the local Ray; None: every CPU here


ConfigStore.instance().store(
    group="hydra/launcher", name="ray", node=RayLauncherConf, provider="chordrec"
)


def job_resources(
    job: DictConfig,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
) -> dict[str, float]:
    """What one job asks Ray for, in Ray's resource names: ``{"CPU": n, "GPU": m}``.

    ``CPU`` is the job's ``trainer.num_threads`` (torch's CPU threads; 0 or null: 1) and
    ``GPU`` is 1 when its ``trainer.device`` is ``cuda`` or ``cuda:N``, else 0 (Ray hides
    the GPUs from a task that asked for none, so ``device=auto`` then runs on the CPU);
    ``num_cpus`` and ``num_gpus``, when given, replace them.
    """
    threads = OmegaConf.select(job, "trainer.num_threads")
    device = str(OmegaConf.select(job, "trainer.device", default="cpu"))
    return {
        "CPU": float(num_cpus if num_cpus is not None else threads or 1),
        "GPU": float(num_gpus if num_gpus is not None else device.startswith("cuda")),
    }


def fits(resources: dict[str, float], nodes: Sequence[dict[str, float]]) -> bool:
    """Whether one of ``nodes`` (each node's total resources, Ray's names) can hold a job
    asking for ``resources``."""
    return any(
        all(node.get(name, 0.0) >= amount for name, amount in resources.items() if amount)
        for node in nodes
    )


def is_loopback(address: str | None) -> bool:
    """Whether ``address`` (``host:port``; None: a local Ray) is on this machine's
    loopback interface."""
    if address is None:
        return True
    host = address.rpartition(":")[0] or address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_reachable(address: str) -> None:
    """Raise :class:`LauncherError` naming ``hydra.launcher.address`` when nothing accepts
    a TCP connection at ``address`` (``host:port``) within :data:`CONNECT_TIMEOUT_S`;
    Ray itself would retry for minutes."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise LauncherError(f"hydra.launcher.address={address}: expected host:port of a Ray head")
    try:
        socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise LauncherError(
            f"hydra.launcher.address={address}: no Ray cluster answers there "
            f"({exc.strerror or exc}); start its head with `ray start --head`, "
            "or leave the address null for a local Ray"
        ) from None


def connect(address: str | None, local_cpus: int | None) -> ModuleType:
    """Ray, initialised in this process once: joined to the cluster at ``address``, or
    (``address`` None) a local Ray on 127.0.0.1 with ``local_cpus`` CPUs (None: all)
    in a new temporary directory, shut down and removed when the process exits. Returns
    the ``ray`` module."""
    require_extra("cluster", "hydra/launcher=ray")
    if is_loopback(address):
        os.environ.update(LOOPBACK_ENV)  # before Ray is imported: it reads it then
    import ray

    if ray.is_initialized():
        return ray
    if address is None:
        temp_dir = tempfile.mkdtemp(prefix="chordrec-ray-", dir=os.environ.get("RAY_TMPDIR"))
        atexit.register(stop_local_ray, ray, temp_dir)
        ray.init(
            address="local",
            num_cpus=local_cpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            _temp_dir=temp_dir,
        )
        log.info("started a local Ray on 127.0.0.1 (%s)", temp_dir)
    else:
        check_reachable(address)
        ray.init(address=address)
    protect_auth_token()
    return ray


def protect_auth_token() -> None:
    """Make Ray's ``~/.ray/auth_token``, if this Ray made one, readable by its owner only
    (Ray 2.60 writes it with mode 0644)."""
    token = Path.home() / ".ray" / "auth_token"
    if token.exists():
        token.chmod(0o600)


def stop_local_ray(ray: ModuleType, temp_dir: str) -> None:
    """Shut down the local Ray that :func:`connect` started and remove its ``temp_dir``."""
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


def portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling (Ray sends it back to the sweep), else a
    ``RuntimeError`` with its type and message."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def execute_job(
    job: DictConfig, shared: tuple[HydraContext, TaskFunction, dict[Any, Any]]
) -> JobReturn:
    """Run one composed job in a Ray worker: tag it with the node, move into the sweep's
    working directory where this node has it, and run it as Hydra runs a sweep's job.
    ``shared`` is what every job of the batch shares: Hydra's context, the task function
    and Hydra's singletons."""
    import ray

    hydra_context, task_function, singleton_state = shared
    setup_hydra_globals()
    Singleton.set_state(singleton_state)
    node_id, node_ip = ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()
    OmegaConf.update(job, f"tracking.tags.{NODE_ID_TAG}", node_id, force_add=True)
    OmegaConf.update(job, f"tracking.tags.{NODE_IP_TAG}", node_ip, force_add=True)
    cwd = Path(str(job.hydra.runtime.cwd))
    if cwd.is_dir():
        os.chdir(cwd)
    else:
        log.warning(
            "node %s has no %s: job %s runs in %s", node_ip, cwd, job.hydra.job.id, os.getcwd()
        )
    ret = run_job(
        hydra_context=hydra_context,
        config=job,
        task_function=task_function,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    if ret.status == JobStatus.FAILED:
        log.error("job %s failed on node %s", job.hydra.job.id, node_ip, exc_info=ret._return_value)
        ret.return_value = portable(ret._return_value)
    return ret


class RayLauncher(Launcher):
    """Runs each job of a sweep as a Ray task (see the module)."""

    def __init__(
        self,
        address: str | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        local_cpus: int | None = None,
    ) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.local_cpus = local_cpus
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Keep what Hydra hands the launcher for its jobs."""
        self.config = config
        self.task_function = task_function
        self.hydra_context = hydra_context

    def compose(self, overrides: Sequence[str], idx: int, sweep_dir: Path) -> DictConfig:
        """Job ``idx``'s config: the sweep's config with ``overrides``, its job id and
        number, and the sweep directory as the absolute path ``sweep_dir``."""
        assert self.hydra_context is not None and self.config is not None
        job = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(job):
            job.hydra.job.id = f"{job.hydra.job.name}_{idx}"
            job.hydra.job.num = idx
            job.hydra.sweep.dir = str(sweep_dir)
        return job

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Run the jobs as Ray tasks; one ``JobReturn`` per job, in order, once all ended."""
        assert self.config is not None and self.task_function is not None
        setup_hydra_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        ray = connect(self.address, self.local_cpus)
        jobs = [
            self.compose(overrides, idx, sweep_dir)
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx)
        ]
        wants = [job_resources(job, self.num_cpus, self.num_gpus) for job in jobs]
        nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
        for job, resources in zip(jobs, wants, strict=True):
            if not fits(resources, nodes):
                raise LauncherError(
                    f"job {job.hydra.job.id} asks Ray for {resources['CPU']:g} CPUs and "
                    f"{resources['GPU']:g} GPUs (trainer.num_threads, trainer.device or "
                    "hydra.launcher.num_cpus/num_gpus), more than any node of the cluster has: "
                    + ", ".join(f"{n.get('CPU', 0):g} CPUs {n.get('GPU', 0):g} GPUs" for n in nodes)
                )
        log.info(
            "Ray: launching %d jobs on %d nodes, sweep output dir %s",
            len(jobs),
            len(nodes),
            sweep_dir,
        )
        shared = ray.put((self.hydra_context, self.task_function, Singleton.get_state()))
        execute = ray.remote(max_calls=1)(execute_job)  # a fresh worker process per job
        refs = []
        for job, resources in zip(jobs, wants, strict=True):
            log.info(
                "\t#%d : %s (%g CPUs, %g GPUs)",
                job.hydra.job.num,
                redact(" ".join(filter_overrides(job.hydra.overrides.task))),
                resources["CPU"],
                resources["GPU"],
            )
            task = execute.options(
                num_cpus=resources["CPU"],
                num_gpus=resources["GPU"],
                max_retries=0,  # a job's run is never started twice
                name=str(job.hydra.job.id),
            )
            refs.append(task.remote(job, shared))
        try:
            return [self._result(ray, job, ref) for job, ref in zip(jobs, refs, strict=True)]
        except KeyboardInterrupt:
            for ref in refs:
                ray.cancel(ref)
            raise

    @staticmethod
    def _result(ray: ModuleType, job: DictConfig, ref: Any) -> JobReturn:
        """Job ``job``'s return once its task ended; a task that Ray could not complete
        (its worker died, it was cancelled) as a FAILED return carrying Ray's error."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as exc:
            task_cfg = OmegaConf.masked_copy(job, [k for k in job if k != "hydra"])
            return JobReturn(
                overrides=list(job.hydra.overrides.task),
                cfg=task_cfg,
                hydra_cfg=job,
                status=JobStatus.FAILED,
                _return_value=exc,
            )
