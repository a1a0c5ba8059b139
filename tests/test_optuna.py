"""The Optuna sweeper (hydra_plugins/chordrec_optuna) and chordrec.tuning: the search
space from Hydra's sweep syntax, the study in an RDB storage, a trial's run reporting and
being pruned, and two sweep processes sharing one study, on the real data."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from chordrec import run as lifecycle
from chordrec import tuning
from chordrec.errors import ConfigError, TrialPruned
from hydra_plugins.chordrec_optuna.optuna_sweeper import OptunaSweeper, dimension, hydra_value
from tests.conftest import OOD, subprocess_env
from tests.test_study import TINY


def _dimension(text: str) -> tuning.Dimension:
    (override,) = OverridesParser.create().parse_overrides([text])
    return dimension(override)


# ------------------------------------------------------------------ the search space


def test_sweep_expressions_become_optuna_distributions() -> None:
    assert _dimension("a=choice(16, 32, x)").distribution() == (
        optuna.distributions.CategoricalDistribution((16, 32, "x"))
    )
    assert _dimension("a=range(16, 129, 16)").distribution() == (
        optuna.distributions.IntDistribution(16, 128, step=16)
    )
    assert _dimension("a=range(0.1, 0.35, 0.1)").choices == pytest.approx((0.1, 0.2, 0.3))
    assert _dimension("a=interval(0, 0.5)").distribution() == (
        optuna.distributions.FloatDistribution(0.0, 0.5)
    )
    assert _dimension("a=tag(log, interval(1e-4, 1e-2))").distribution() == (
        optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    )
    assert _dimension("a=tag(int, log, interval(8, 256))").distribution() == (
        optuna.distributions.IntDistribution(8, 256, log=True)
    )


def test_sampled_values_are_written_back_as_hydra_overrides() -> None:
    values = [3, 0.25, 1e-05, True, None, "adamw", "it's a/b:c"]
    lines = [f"k={hydra_value(v)}" for v in values]
    parsed = [o.value() for o in OverridesParser.create().parse_overrides(lines)]
    assert parsed == values


# ------------------------------------------------------------------ the study


def test_a_study_is_shared_through_its_storage_and_keeps_its_pruner(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    pruner = {"_target_": "optuna.pruners.ThresholdPruner", "lower": 0.5}
    first = tuning.open_study(storage, "s", "maximize", pruner=pruner)
    asked = tuning.ask(first, [tuning.Dimension("lr", low=1e-4, high=1e-2, log=True)])
    # a second process loads the study (load_if_exists) and its trials keep counting
    second = tuning.open_study(storage, "s", "maximize")
    assert tuning.ask(second, []).number == asked.number + 1
    assert second.user_attrs[tuning.PRUNER_ATTR] == pruner
    with pytest.raises(ConfigError, match="exists with direction maximize, not minimize"):
        tuning.open_study(storage, "s", "minimize")

    # the trial's run: reports each epoch, and the stored pruner stops it below 0.5
    reporter = tuning.TrialReporter(storage, "s", asked.number, "val/acc")
    reporter.attach_run("run-1")
    reporter(1, {"val/acc": 0.7, "val/loss": 1.0})
    with pytest.raises(TrialPruned, match="trial 0 pruned after epoch 2: val/acc = 0.3000"):
        reporter(2, {"val/acc": 0.3})
    with pytest.raises(ConfigError, match="optuna.metric 'val/f1' is not an epoch metric"):
        tuning.TrialReporter(storage, "s", asked.number, "val/f1")(3, {"val/acc": 0.3})
    tuning.tell(first, asked, tuning.PRUNED)
    trial = first.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.intermediate_values == {1: 0.7, 2: 0.3}
    assert trial.user_attrs[tuning.RUN_ID_ATTR] == "run-1"


def test_a_storage_that_cannot_be_opened_is_one_error_naming_it(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'no-such-dir' / 'study.db'}"
    with pytest.raises(ConfigError, match=f"Optuna storage {storage}: OperationalError"):
        tuning.open_study(storage, "s", "maximize")
    with pytest.raises(ConfigError, match="'optuna.pruners.Nope' in hydra.sweeper.pruner: .*Nope"):
        tuning.open_study(storage, "s", "maximize", pruner={"_target_": "optuna.pruners.Nope"})


def test_each_job_outcome_is_told_to_the_study(tmp_path: Path) -> None:
    sweeper = OptunaSweeper("s", None, "maximize", 3, 3, "val/acc", None, None, {})
    study = tuning.open_study(f"sqlite:///{tmp_path / 'study.db'}", "s", "maximize")
    outcomes = [
        JobReturn(status=JobStatus.COMPLETED, _return_value=0.5),
        JobReturn(status=JobStatus.FAILED, _return_value=TrialPruned("trial 1 pruned")),
        JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError("loss is NaN")),
        JobReturn(status=JobStatus.COMPLETED, _return_value=float("nan")),
    ]
    errors = [sweeper._tell(study, tuning.ask(study, []), job) for job in outcomes]
    assert errors[:2] == [None, None] and errors[3] is None
    assert isinstance(errors[2], RuntimeError) and str(errors[2]) == "loss is NaN"
    states = [t.state.name for t in study.get_trials()]
    assert states == ["COMPLETE", "PRUNED", "FAIL", "FAIL"]  # a NaN objective fails too
    assert study.best_value == 0.5


# ------------------------------------------------------------------ a trial's run later


@pytest.mark.integration
def test_a_trials_run_resumed_or_evaluated_never_touches_its_study(
    train_config: Callable[..., DictConfig], tmp_path: Path
) -> None:
    study_file = tmp_path / "study.db"
    storage = f"sqlite:///{study_file}"
    pruner = {"_target_": "optuna.pruners.ThresholdPruner", "lower": 1.01}  # prunes every trial
    study = tuning.open_study(storage, "s", "maximize", pruner=pruner)
    asked = tuning.ask(study, [])
    here = ["data.level=beat", "seq_len=16", "ood.part=null"]
    trial = train_config(
        *here, f"optuna.storage={storage}", "optuna.study=s", f"optuna.trial={asked.number}"
    )
    with pytest.raises(TrialPruned, match="pruned after epoch 1"):
        lifecycle.train(trial)
    tuning.tell(study, asked, tuning.PRUNED)  # as the sweeper does
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (pruned,) = client.search_runs([client.get_experiment_by_name("chordrec").experiment_id])
    assert pruned.info.status == "KILLED" and pruned.data.tags["pruned"] == "true"
    run_id = pruned.info.run_id

    # resumed, then evaluated, with the study's storage gone: neither may open it
    study_file.rename(tmp_path / "elsewhere.db")
    resumed = lifecycle.train(train_config(*here, f"resume={run_id}"))
    evaluated = lifecycle.evaluate(run_id, train_config(*here), [])
    assert not study_file.exists()
    assert client.get_run(run_id).info.status == "FINISHED"
    assert evaluated["test/frame_acc"] == pytest.approx(resumed["test/frame_acc"])

    # the study holds the trial as the sweeper told it: pruned after epoch 1, nothing more
    (tmp_path / "elsewhere.db").rename(study_file)
    (told,) = optuna.load_study(study_name="s", storage=storage).get_trials()
    assert told.state == optuna.trial.TrialState.PRUNED
    assert list(told.intermediate_values) == [1]
    assert told.user_attrs == {tuning.RUN_ID_ATTR: run_id}


# ------------------------------------------------------------------ two workers, one study

# Each worker runs 3 trials of the study. The threshold pruner (warm-up 2 epochs) stops a
# trial whose val/acc after epoch 2 is below 1.01, which is every trial that reaches
# epoch 2: the search space's max_epochs decides which trials are pruned (those with 2
# epochs), so that the test does not hang on how good a tiny model happens to be. Each
# worker's random sampler has its own seed; 1 and 2 give both epoch counts.
WORKER_TRIALS = 3


@pytest.mark.system
@pytest.mark.integration
def test_two_sweep_processes_share_one_study_and_prune(data_root: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    store = tmp_path / "mlruns"

    def worker(seed: int) -> subprocess.Popen:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chordrec.train",
                "-m",
                "hparams_search=optuna",
                f"hydra.sweeper.storage={storage}",
                "hydra.sweeper.study_name=shared",
                f"hydra.sweeper.n_trials={WORKER_TRIALS}",
                "hydra/sweeper/sampler=random",
                f"seed={seed}",  # the sampler's seed (and the runs')
                "hydra/sweeper/pruner=threshold",
                "hydra.sweeper.pruner.lower=1.01",
                f"hydra.sweep.dir={tmp_path / f'worker{seed}'}",
                f"data.root={data_root}",
                f"ood.root={OOD}",
                f"tracking.store_dir={store}",
                "data.level=beat",
                *TINY,
                "trainer.max_epochs=choice(1,2)",  # after TINY's max_epochs=1, which it replaces
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
        )

    workers = [worker(1), worker(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    for w, (_, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err[-3000:]

    # one study: unique trial numbers, as many trials as both workers ran, some pruned
    study = optuna.load_study(study_name="shared", storage=storage)
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(2 * WORKER_TRIALS))
    states = {t.number: t.state for t in trials}
    pruned = {n for n, s in states.items() if s == optuna.trial.TrialState.PRUNED}
    complete = {n for n, s in states.items() if s == optuna.trial.TrialState.COMPLETE}
    assert pruned and complete and pruned | complete == set(states)
    assert all(t.params["trainer.max_epochs"] == (2 if t.number in pruned else 1) for t in trials)

    # one MLflow run per trial, tagged with it, all under the study's one parent run
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("chordrec").experiment_id
    runs = client.search_runs([experiment])
    (parent,) = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    trial_runs = {int(r.data.tags["optuna_trial"]): r for r in runs if r is not parent}
    assert sorted(trial_runs) == sorted(states)
    for number, run in trial_runs.items():
        tags = run.data.tags
        assert tags["optuna_study"] == "shared"
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        trial = study.trials[number]
        assert trial.user_attrs[tuning.RUN_ID_ATTR] == run.info.run_id
        assert float(run.data.params["optimizer.lr"]) == pytest.approx(trial.params["optimizer.lr"])
        assert int(run.data.params["seq_len"]) == trial.params["seq_len"]
        history = client.get_metric_history(run.info.run_id, "val/acc")
        if number in pruned:  # stopped after epoch 2, KILLED, its history kept
            assert run.info.status == "KILLED" and tags["pruned"] == "true"
            assert "after epoch 2" in tags["pruned_reason"]
            assert sorted(m.step for m in history) == [1, 2]
            assert trial.intermediate_values == {m.step: m.value for m in history}
            assert "test/frame_acc" not in run.data.metrics
        else:  # the objective is the run's best validation frame accuracy
            assert run.info.status == "FINISHED" and "pruned" not in tags
            assert trial.value == run.data.metrics["val/frame_acc"]

    # the parent holds the study's best trial; it ended FINISHED (pruning is no failure)
    best = study.best_trial
    assert parent.info.status == "FINISHED", parent.data.tags.get("error")
    assert parent.data.tags["optuna_study"] == "shared"
    assert parent.data.tags["best_trial"] == str(best.number)
    assert parent.data.tags["best_run_id"] == trial_runs[best.number].info.run_id
    assert parent.data.metrics["study/best_value"] == best.value
    assert float(parent.data.tags["best.optimizer.lr"]) == best.params["optimizer.lr"]
    for seed in (1, 2):
        results = OmegaConf.load(tmp_path / f"worker{seed}" / "optimization_results.yaml")
        assert results.name == "shared" and results.storage == storage

    # its summary, by the worker that ended last (the same artifacts, updated): the
    # study's history and importance among the figures, the pruned trials counted
    figures = [a.path for a in client.list_artifacts(parent.info.run_id, "figures")]
    assert figures == [
        "figures/factors.png",
        "figures/learning_curves.png",
        "figures/optimization_history.png",
        "figures/param_importances.png",
        "figures/tradeoff.png",  # finished trials were scored out of domain
    ]
    assert parent.data.metrics["sweep/runs_pruned"] == len(pruned)
    assert parent.data.metrics["sweep/runs_finished"] == len(complete)
    assert parent.data.metrics["sweep/best_value"] == best.value
    assert parent.data.tags["sweep.best_run_id"] == trial_runs[best.number].info.run_id
    path = client.download_artifacts(parent.info.run_id, "summary.md", str(tmp_path))
    summary = Path(path).read_text()
    assert f"{len(complete)} finished, {len(pruned)} pruned, 0 failed" in summary
    assert f"{2 * WORKER_TRIALS} trials: {len(complete)} complete, {len(pruned)} pruned" in summary
    assert "| 1 | " in summary and "fANOVA importance" in summary


# ------------------------------------------------------------------ what a study may name


def _stored_pruner(storage: str, spec: object) -> None:
    """Write ``spec`` as the study's pruner straight into its database, as anyone who can
    write the storage can."""
    optuna.load_study(study_name="s", storage=storage).set_user_attr(tuning.PRUNER_ATTR, spec)


def test_a_pruner_in_the_study_database_names_no_code_a_trial_runs(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = tuning.open_study(storage, "s", "maximize")
    asked = tuning.ask(study, [])
    marker = tmp_path / "ran"
    for spec in (
        {"_target_": "os.system", "command": f"touch {marker}"},
        {"_target_": "optuna.pruners.os.system", "command": f"touch {marker}"},
        {"_target_": "optuna.pruners.TYPE_CHECKING"},
        f"os.system('touch {marker}')",
    ):
        _stored_pruner(storage, spec)
        with pytest.raises(
            ConfigError, match=f"in attribute 'pruner' of Optuna study 's' in {storage}"
        ):
            tuning.TrialReporter(storage, "s", asked.number, "val/acc")
    assert not marker.exists()
    # an Optuna pruner is still built from the database, and prunes
    _stored_pruner(storage, {"_target_": "optuna.pruners.ThresholdPruner", "lower": 0.5})
    with pytest.raises(TrialPruned, match="pruned after epoch 1"):
        tuning.TrialReporter(storage, "s", asked.number, "val/acc")(1, {"val/acc": 0.3})


@pytest.mark.slow
def test_a_trials_run_refuses_the_studys_pruner_naming_code(tmp_path: Path) -> None:
    """The trial's own process (``python -m chordrec.train optuna.trial=N``, as the sweeper
    launches it) stops with one line naming the target and the study; the code never runs."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    asked = tuning.ask(tuning.open_study(storage, "s", "maximize"), [])
    marker = tmp_path / "ran"
    _stored_pruner(storage, {"_target_": "os.system", "command": f"touch {marker}"})
    trial = subprocess.run(
        [
            sys.executable,
            "-m",
            "chordrec.train",
            f"optuna.storage={storage}",
            "optuna.study=s",
            f"optuna.trial={asked.number}",
            f"tracking.store_dir={tmp_path / 'mlruns'}",
            f"hydra.run.dir={tmp_path / 'run'}",
            *TINY,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert trial.returncode != 0
    assert "pruner _target_ 'os.system' in attribute 'pruner' of Optuna study 's'" in trial.stderr
    assert "Traceback" not in trial.stderr
    assert not marker.exists()


def test_the_sweepers_sampler_and_pruner_name_only_optuna_classes(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    marker = tmp_path / "ran"
    code = {"_target_": "os.system", "command": f"touch {marker}"}
    with pytest.raises(ConfigError, match="sampler _target_ 'os.system' in hydra.sweeper.sampler"):
        tuning.open_study(storage, "s", "maximize", sampler=code)
    with pytest.raises(ConfigError, match="pruner _target_ 'os.system' in hydra.sweeper.pruner"):
        tuning.open_study(storage, "s", "maximize", pruner=code)
    assert not marker.exists()
    sampler = {"_target_": "optuna.samplers.RandomSampler", "seed": 1}
    study = tuning.open_study(storage, "s", "maximize", sampler=sampler)
    assert isinstance(study.sampler, optuna.samplers.RandomSampler)
