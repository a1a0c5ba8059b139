"""The Ray launcher's own logic, without Ray: what each job asks for, whether a node can
hold it, which addresses are local, an address nothing answers at, a job Ray could not
run, and that Hydra finds the plugin (``hydra/launcher=ray``). The launcher on a real
Ray cluster: test_ray."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.errors import CompactHydraException
from hydra.plugins.launcher import Launcher
from omegaconf import OmegaConf

from chordrec.errors import ConfigError
from hydra_plugins.chordrec_ray.ray_launcher import (
    RayLauncher,
    check_reachable,
    fits,
    is_loopback,
    job_resources,
)
from tests.conftest import compose_train, free_port


def test_hydra_finds_the_ray_launcher() -> None:
    # (discovery executes the plugin's module again: compare names, not classes)
    found = {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(Launcher)}
    assert "hydra_plugins.chordrec_ray.ray_launcher.RayLauncher" in found
    node = ConfigStore.instance().load("hydra/launcher/ray.yaml").node
    assert node._target_ == "hydra_plugins.chordrec_ray.ray_launcher.RayLauncher"
    assert node.address is None


@pytest.mark.parametrize(
    ("overrides", "launcher", "expected"),
    [
        ([], {}, {"CPU": 1.0, "GPU": 0.0}),  # num_threads null: torch's default, one CPU
        (["trainer.num_threads=0"], {}, {"CPU": 1.0, "GPU": 0.0}),
        (["trainer.num_threads=3"], {}, {"CPU": 3.0, "GPU": 0.0}),
        (["trainer.device=cuda"], {}, {"CPU": 1.0, "GPU": 1.0}),
        (["trainer.device=cuda:1", "trainer.num_threads=2"], {}, {"CPU": 2.0, "GPU": 1.0}),
        (["trainer.device=auto"], {}, {"CPU": 1.0, "GPU": 0.0}),
        (["trainer.num_threads=4"], {"num_cpus": 0.5, "num_gpus": 0.25}, {"CPU": 0.5, "GPU": 0.25}),
    ],
)
def test_each_job_asks_for_what_its_config_says(
    overrides: list[str], launcher: dict[str, float], expected: dict[str, float]
) -> None:
    assert job_resources(compose_train(overrides), **launcher) == expected


def test_a_job_fits_a_node_that_has_all_it_asks_for() -> None:
    nodes = [{"CPU": 2.0, "memory": 1e9}, {"CPU": 1.0, "GPU": 1.0}]
    assert fits({"CPU": 2.0, "GPU": 0.0}, nodes)
    assert fits({"CPU": 1.0, "GPU": 1.0}, nodes)
    assert not fits({"CPU": 2.0, "GPU": 1.0}, nodes)
    assert not fits({"CPU": 3.0, "GPU": 0.0}, nodes)


def test_loopback_addresses() -> None:
    assert is_loopback(None)  # a local Ray
    for address in ("127.0.0.1:6379", "127.0.1.1:6379", "localhost:6379", "[::1]:6379"):
        assert is_loopback(address), address
    for address in ("10.0.0.5:6379", "head.lab:6379", "auto"):
        assert not is_loopback(address), address


def test_an_address_nothing_answers_at_is_one_error_naming_the_setting() -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(
        ConfigError, match=rf"^hydra.launcher.address={address}: no Ray cluster"
    ) as err:
        check_reachable(address)
    assert isinstance(err.value, CompactHydraException)  # Hydra prints its message alone
    with pytest.raises(ConfigError, match="expected host:port"):
        check_reachable("head.lab")


class _RayError(Exception):
    """Stands for ``ray.exceptions.RayError`` (this module does not import Ray)."""


def test_a_job_ray_could_not_run_comes_back_failed_carrying_ray_s_error() -> None:
    def get(ref: object) -> None:
        raise _RayError(f"the worker running {ref} died")

    fake_ray = SimpleNamespace(exceptions=SimpleNamespace(RayError=_RayError), get=get)
    job = OmegaConf.create({"seed": 1, "hydra": {"overrides": {"task": ["seed=1"]}}})
    result = RayLauncher._result(fake_ray, job, "job 0")
    assert result.status == JobStatus.FAILED and result.overrides == ["seed=1"]
    assert "hydra" not in result.cfg and result.cfg.seed == 1
    with pytest.raises(_RayError, match="the worker running job 0 died"):
        result.return_value  # noqa: B018 (what the sweeper does with a failed job)
