"""Put a model to work: audio files in, chord labels out (``chordrec transcribe``).

A model is named by a registry URI (``models:/chordrec@champion``, the default;
``models:/<name>/<version>``), a run (``runs:/<run id>/model`` or the bare run id),
a local checkpoint file (``.pt``), or ``templates`` for the training-free template
matcher of :mod:`chordrec.models.templates`. Loading never unpickles: a run's
``checkpoints/best.pt`` is read with ``torch.load(..., weights_only=True)`` and the
network rebuilt from the config inside it (``build_model(config["model"])``), which
also says how to run it: level (frame or beat), sequence length and mode, decoding.

Outputs: MIREX ``.lab`` (``start end label``, seconds, Harte labels), JAMS (chord
namespace) or CSV, one segment per run of equal frames; optionally a PNG of the
chromagram and the chords. Files are written atomically (a temporary file, then a
link or rename), a song's output and plot both or neither, and never replace an
existing file unless ``force`` is set.

torch is imported only to load a network (:func:`network_model`): the template matcher
runs on NumPy alone, through the same chain (:func:`transcribe_features`: its frame
scores, then :func:`~chordrec.decoding.decode`).
"""

from __future__ import annotations

import logging
import re
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from chordrec.audio.analysis import (
    AudioFeatures,
    FeatureWorkers,
    audio_features,
    files_features,
)
from chordrec.audio.features import DEFAULT_LIMITS, AudioLimits
from chordrec.constants import FRAME_RATE, SAMPLE_RATE
from chordrec.data.songs import Song
from chordrec.decoding import decode
from chordrec.errors import ConfigError, UserError
from chordrec.inference.metrics import frames_to_segments
from chordrec.io import resolved_models
from chordrec.io.atomic_write import write_all_atomic
from chordrec.io.chord_files import format_csv, format_jams, format_lab
from chordrec.models import templates

if TYPE_CHECKING:  # torch, imported when a network is loaded
    import torch

    from chordrec.inference.predictor import Predictor

DEFAULT_MODEL = "models:/chordrec@champion"
TEMPLATES = "templates"
FORMATS = ("lab", "jams", "csv")
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".au", ".caf", ".w64"}
)
VITERBI_SELF_TRANSITION = 0.9
"""Self-transition of Viterbi decoding for checkpoints that record no tuned one."""

log = logging.getLogger(__name__)

_RUN_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class ChordModel:
    """A model ready to transcribe: ``scores`` maps a song (its ``chroma`` and, at beat
    level, ``beats``) to frame log-probabilities (frames, 25); ``decode`` ('argmax',
    'viterbi' or 'beat_viterbi') with ``self_transition`` and, for 'beat_viterbi', the
    song's beats and ``beat_self_transition`` turn those into classes."""

    source: str
    level: str
    decode: str
    self_transition: float
    scores: Callable[[Song], np.ndarray]
    beat_self_transition: float | None = None

    @property
    def needs_beats(self) -> bool:
        """Whether a song's beats must be tracked: beat-level models, beat-aware decoding."""
        return self.level == "beat" or self.decode == "beat_viterbi"

    def classes(self, log_probs: np.ndarray, beats: np.ndarray) -> np.ndarray:
        """(frames,) int64 classes of frame log-probabilities ``log_probs`` (frames, 25),
        decoded as the model says; ``beats`` (beats,) frame indices, for 'beat_viterbi'."""
        return decode(
            log_probs, self.decode, self.self_transition, beats, self.beat_self_transition
        )


def template_model() -> ChordModel:
    """The training-free triad-template matcher with its validation-tuned Viterbi."""
    return ChordModel(
        source=TEMPLATES,
        level="frame",
        decode="viterbi",
        self_transition=templates.DEFAULT_SELF_TRANSITION,
        scores=lambda song: templates.template_scores(song.chroma),
    )


def network_model(
    checkpoint: Mapping[str, Any],
    source: str,
    device: torch.device | str = "cpu",
    self_transition: float | None = None,
) -> ChordModel:
    """Rebuild a trained network from a checkpoint dict (keys ``model``: state dict,
    ``config``: the run's resolved config, ``inference``: the run's
    :class:`~chordrec.inference.predictor.InferenceRecipe`) and run it as the run was scored.

    A checkpoint written before runs recorded their recipe gets it from its config,
    with ``self_transition`` (the run's tuned value, where known) or
    :data:`VITERBI_SELF_TRANSITION` for Viterbi. Raises ValueError naming ``source``
    when the checkpoint lacks what transcription needs."""
    import torch

    from chordrec.inference.predictor import InferenceRecipe, Predictor
    from chordrec.models import build_model

    try:
        config, state = checkpoint["config"], checkpoint["model"]
        spec = config["model"]
        if "inference" in checkpoint:
            recipe = InferenceRecipe.from_dict(checkpoint["inference"])
        else:
            recipe = InferenceRecipe.from_config(config, self_transition)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{source}: not a chordrec training checkpoint (lacks {exc})") from None
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    if recipe.decode == "beat_viterbi" and recipe.beat_self_transition is None:
        log.warning(
            "%s records no tuned beat self-transition (a checkpoint the run did not "
            "score); decoding with plain Viterbi",
            source,
        )
        recipe = replace(recipe, decode="viterbi")
    if recipe.decode == "viterbi" and recipe.self_transition is None:
        log.warning(
            "%s records no tuned Viterbi self-transition (written before runs recorded "
            "their decoding); decoding with %s",
            source,
            VITERBI_SELF_TRANSITION,
        )
        recipe = replace(recipe, self_transition=VITERBI_SELF_TRANSITION)
    try:
        network = build_model(spec, source)
        network.load_state_dict(state)
    except ConfigError:
        raise  # a _target_ the allow-list refuses: the message names it and ``source``
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{source}: the weights do not fit the model config ({exc})") from None
    device = torch.device(device)
    return predictor_model(Predictor(network.to(device).eval(), recipe, device), source)


def predictor_model(predictor: Predictor, source: str) -> ChordModel:
    """A network run by ``predictor`` as a :class:`ChordModel`, decoding with its
    recipe (a Viterbi recipe without a tuned self-transition gets
    :data:`VITERBI_SELF_TRANSITION`). Training runs score out-of-domain audio through
    this (:mod:`chordrec.ood`), the way ``chordrec transcribe`` runs their checkpoints."""
    recipe = predictor.recipe

    def scores(song: Song) -> np.ndarray:
        with _one_cpu_thread(predictor.device):
            return predictor.frame_log_probs(song)

    return ChordModel(
        source=source,
        level=recipe.level,
        decode=recipe.decode,
        self_transition=float(recipe.self_transition or VITERBI_SELF_TRANSITION),
        scores=scores,
        beat_self_transition=recipe.beat_self_transition,
    )


@contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run torch on one CPU thread: one song's batches are too small to share out, and
    idle threads spinning on a busy machine cost far more (the Table 4 BiLSTM on a
    4-minute song: under 0.01 s on one thread, 1.1-2.1 s on two, at loads of 2-5 on
    2 cores)."""
    if device.type != "cpu":
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def model_kind(spec: str) -> str:
    """What a model name names: 'templates', 'file' (a .pt checkpoint), 'registry'
    (``models:/...``) or 'run' (``runs:/<run id>/...`` or a bare 32-hex run id); the
    last two need the tracking store. Raises ValueError for anything else."""
    if spec == TEMPLATES:
        return "templates"
    if spec.endswith(".pt"):
        return "file"
    if spec.startswith("models:/"):
        return "registry"
    if _RUN_ID.fullmatch(_run_part(spec)):
        return "run"
    raise ValueError(
        f"model {spec!r} is none of: models:/<name>@<alias>, models:/<name>/<version>, "
        "runs:/<run id>/model, a run id, a .pt checkpoint file, 'templates'"
    )


def _run_part(spec: str) -> str:
    """The run id of ``runs:/<run id>/...``, else ``spec`` itself."""
    return spec[len("runs:/") :].split("/", 1)[0] if spec.startswith("runs:/") else spec


def load_model(
    spec: str = DEFAULT_MODEL,
    device: str = "auto",
    connect: Callable[[], object] | None = None,
    database: Path | None = None,
) -> ChordModel:
    """Load the model named by ``spec`` (see :func:`model_kind`) onto ``device``.

    Registry and run names need the tracking store: ``connect`` configures it
    (:func:`chordrec.tracking.configure`; None: configured already) and is called only
    when MLflow is asked. Where that store is the local SQLite file ``database``
    (:func:`~chordrec.io.resolved_models.local_database`), what a name stood for is
    kept (:mod:`chordrec.io.resolved_models`) and MLflow is not imported again while the
    file is unchanged.
    """
    kind = model_kind(spec)
    if kind == "templates":
        return template_model()
    from chordrec.fit import resolve_device  # torch: only for networks
    from chordrec.io.checkpoints import load_checkpoint

    target = resolve_device(device)
    if kind == "file":
        if not Path(spec).is_file():
            raise ValueError(f"{spec}: no such checkpoint file")
        return network_model(load_checkpoint(spec), spec, target)
    stamp = resolved_models.store_stamp(database) if database is not None else None
    kept = resolved_models.lookup(database, spec, stamp) if database is not None else None
    if kept is not None:
        log.debug("%s: run %s, kept in %s", spec, kept.run_id, kept.checkpoint.parent)
        return _stored_network(spec, kept, load_checkpoint(kept.checkpoint), target)
    if connect is not None:
        connect()
    from chordrec import tracking  # MLflow: only for models in the tracking store

    run_id = tracking.registered_run_id(spec) if kind == "registry" else _run_part(spec)
    with tempfile.TemporaryDirectory(prefix="chordrec-model-") as tmp:
        path = tracking.run_checkpoint(run_id, "best", tmp)
        checkpoint = load_checkpoint(path)
        resolved = resolved_models.Resolved(
            run_id, tracking.run_metrics(run_id).get("decode/self_transition"), path
        )
        if database is not None:
            _keep(database, spec, stamp, resolved)
    return _stored_network(spec, resolved, checkpoint, target)


def _stored_network(
    spec: str, resolved: resolved_models.Resolved, checkpoint: Mapping[str, Any], target: Any
) -> ChordModel:
    """:func:`network_model` of a model found in the tracking store."""
    return network_model(
        checkpoint, f"{spec} (run {resolved.run_id})", target, resolved.self_transition
    )


def _keep(database: Path, spec: str, stamp: str | None, resolved: resolved_models.Resolved) -> None:
    """:func:`~chordrec.io.resolved_models.remember`, a failure only logged: the model
    is loaded either way."""
    try:
        resolved_models.remember(database, spec, stamp, resolved)
    except (OSError, UserError) as exc:
        log.warning("could not keep what %s stands for (%s); MLflow is asked each time", spec, exc)


@dataclass(frozen=True)
class Transcription:
    """One song's result: ``chroma`` (frames, 12), ``classes`` (frames,) int64 in 0..24,
    ``duration`` of the audio in seconds."""

    chroma: np.ndarray
    classes: np.ndarray
    duration: float

    def segments(self) -> tuple[np.ndarray, list[str]]:
        """Runs of equal frames as ``(intervals (segments, 2) in seconds, Harte labels)``;
        frame ``i`` covers ``[i, i + 1) * 512 / 44100`` s, the last segment ends at
        ``duration``."""
        intervals, labels = frames_to_segments(self.classes, FRAME_RATE)
        intervals = np.minimum(intervals, self.duration)
        keep = intervals[:, 1] > intervals[:, 0]
        return intervals[keep], [label for label, k in zip(labels, keep, strict=True) if k]


def transcribe_audio(y: np.ndarray, model: ChordModel, sr: int = SAMPLE_RATE) -> Transcription:
    """Chords of mono audio ``y`` (samples,) at 44.1 kHz: :func:`transcribe_features` of
    its chroma (and beats, where the model needs them)."""
    return transcribe_features(audio_features(y, sr, with_beats=model.needs_beats), model)


def transcribe_features(features: AudioFeatures, model: ChordModel) -> Transcription:
    """Chords of one file's features: the model's frame scores, then decoding."""
    n = len(features.chroma)
    song = Song(
        name="audio", chroma=features.chroma, labels=np.zeros(n, np.int64), beats=features.beats
    )
    classes = model.classes(model.scores(song), features.beats)
    return Transcription(features.chroma, classes, features.duration)


# ------------------------------------------------------------------------ formats


def render(transcription: Transcription, fmt: str, title: str, source: str) -> str:
    """The transcription as text in format ``fmt`` ('lab', 'jams' or 'csv')."""
    intervals, labels = transcription.segments()
    if fmt == "lab":
        return format_lab(intervals, labels)
    if fmt == "csv":
        return format_csv(intervals, labels)
    if fmt == "jams":
        return format_jams(intervals, labels, transcription.duration, title, source)
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")


# ------------------------------------------------------------------- files


@dataclass(frozen=True)
class Job:
    """One input file and where its results go (``plot`` may be None)."""

    audio: Path
    output: Path
    plot: Path | None = None


def find_audio(inputs: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """Expand files and directories into ``(audio file, relative name)`` pairs.

    A file is taken as given, whatever its suffix (libsndfile reads by content;
    relative name: its file name); a directory is searched recursively for files with
    an :data:`AUDIO_EXTENSIONS` suffix (hidden files skipped), each named by its path
    below the directory. Raises ValueError for a missing path, one that is neither a
    regular file nor a directory (a FIFO, a device, a socket: audio is read from
    files), or a directory without audio.
    """
    found: list[tuple[Path, Path]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(
                p
                for p in item.rglob("*")
                if p.is_file()
                and p.suffix.lower() in AUDIO_EXTENSIONS
                and not any(part.startswith(".") for part in p.relative_to(item).parts)
            )
            if not files:
                raise ValueError(f"{item}: no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))})")
            found += [(p, p.relative_to(item)) for p in files]
        elif item.is_file():
            found.append((item, Path(item.name)))
        elif item.exists():
            raise ValueError(
                f"{item}: not a regular file ({_file_kind(item)}); chordrec transcribes "
                "audio files: save the audio to a file first"
            )
        else:
            raise ValueError(f"{item}: no such file or directory")
    return found


def _file_kind(path: Path) -> str:
    """What a path that is neither a regular file nor a directory is, in words."""
    mode = path.stat().st_mode
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "another kind of file"


def plan_jobs(
    inputs: Sequence[str | Path],
    fmt: str,
    output: Path | None = None,
    out_dir: Path | None = None,
    plot: Path | None = None,
) -> list[Job]:
    """Decide every input's output path.

    ``output`` (one input file only) names the result file; else ``out_dir`` receives
    ``<relative name>.<fmt>`` (subdirectories of an input directory mirrored); else
    the result goes beside its audio file. ``plot`` (one input file only) is the PNG.
    Raises :class:`~chordrec.errors.ConfigError` naming the files when an output or
    plot would replace an input file (see :func:`_refuse_replacing_inputs`).
    """
    found = find_audio(inputs)
    single = len(found) == 1 and not any(Path(i).is_dir() for i in inputs)
    if output is not None and out_dir is not None:
        raise ValueError("give either -o/--output or --out-dir, not both")
    if (output is not None or plot is not None) and not single:
        raise ValueError("-o/--output and --plot take a single input file; use --out-dir")
    if output is not None:
        jobs = [Job(found[0][0], output, plot)]
    else:
        jobs = []
        for audio, relative in found:
            target = (out_dir / relative if out_dir is not None else audio).with_suffix(f".{fmt}")
            jobs.append(Job(audio, target, plot))
    _refuse_replacing_inputs(jobs)
    return jobs


def _refuse_replacing_inputs(jobs: Sequence[Job]) -> None:
    """Raise ConfigError when an output or plot path is an input file of ``jobs`` (the
    same path once resolved: ``./``, ``..``, symbolic links; or the same file: hard
    links), e.g. ``song.lab`` in with ``--format lab``, or when a plot is its output.
    Even with ``force``, an output never replaces an input."""
    inputs: dict[Path | tuple[int, int], Path] = {}
    for job in jobs:
        inputs[job.audio.resolve()] = job.audio
        inputs[_file_id(job.audio)] = job.audio
    for job in jobs:
        if job.plot is not None and job.plot.resolve() == job.output.resolve():
            raise ConfigError(
                f"{job.audio}: its plot {job.plot} is also its output; choose another --plot"
            )
        for role, path, option in (
            ("output", job.output, "-o/--output, --out-dir or --format"),
            ("plot", job.plot, "--plot"),
        ):
            if path is None:
                continue
            other = inputs.get(path.resolve()) or inputs.get(_file_id(path))
            if other is not None:
                which = "itself" if other == job.audio else str(other)
                raise ConfigError(
                    f"{job.audio}: its {role} {path} is the input file {which}; "
                    f"choose another with {option}"
                )


def _file_id(path: Path) -> tuple[int, int] | None:
    """``(device, inode)`` of an existing file (links followed), else None."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


@dataclass
class Outcome:
    """What a batch did: written output paths and ``(audio file, error message)`` failures
    (messages do not repeat the audio file's name)."""

    written: list[Path]
    failed: list[tuple[Path, str]]


def write_transcription(
    job: Job, result: Transcription, fmt: str, source: str, force: bool = False
) -> None:
    """Write ``result`` to ``job.output`` in format ``fmt`` and its figure to
    ``job.plot``, both or neither (:func:`~chordrec.io.atomic_write.write_all_atomic`):
    a plot that fails leaves no output behind to block a rerun. Raises FileExistsError
    or OSError naming the file."""
    text = render(result, fmt, job.audio.stem, source)
    files = [(job.output, lambda tmp: tmp.write_text(text, encoding="utf-8"))]
    if job.plot is not None:
        from chordrec.report.figures import transcription_figure

        figure = transcription_figure(result.chroma, result.classes, title=job.audio.name)
        files.append((job.plot, lambda tmp: figure.savefig(tmp, format="png", dpi=100)))
    write_all_atomic(files, force)


def transcribe_files(
    jobs: Sequence[Job],
    model: ChordModel,
    fmt: str,
    force: bool = False,
    progress: bool = True,
    limits: AudioLimits = DEFAULT_LIMITS,
    workers: int | FeatureWorkers = 1,
) -> Outcome:
    """Run every job; a failing file is recorded and the others still finish (running
    out of memory, or a worker process dying on it, included). Audio over ``limits``
    (duration, samples) is refused from its header (a failure). An output (or plot)
    that exists fails its job before its audio is read, unless ``force``.

    ``workers`` > 1, or started :class:`~chordrec.audio.analysis.FeatureWorkers`: the
    audio is decoded and its chroma computed in worker processes
    (:func:`~chordrec.audio.analysis.files_features`) while this process runs the model,
    decodes and writes, file after file in order."""
    written: list[Path] = []
    failed: list[tuple[int, Path, str]] = []
    todo: list[tuple[int, Job]] = []
    seen: dict[Path, Path] = {}
    for index, job in enumerate(jobs):
        key = job.output.resolve()
        existing = [p for p in (job.output, job.plot) if p is not None and p.exists()]
        if key in seen:
            failed.append((index, job.audio, f"{job.output} is also the output of {seen[key]}"))
        elif existing and not force:
            failed.append((index, job.audio, f"{existing[0]} exists (--force replaces it)"))
        else:
            seen[key] = job.audio
            todo.append((index, job))
    results = files_features([job.audio for _, job in todo], model.needs_beats, limits, workers)
    bar = tqdm(
        total=len(todo), unit="file", disable=not progress or len(jobs) < 2, dynamic_ncols=True
    )
    with closing(results), bar:
        for (index, job), features in zip(todo, results, strict=True):
            bar.set_postfix_str(job.audio.name, refresh=False)
            error = features if not isinstance(features, AudioFeatures) else None
            if error is None:
                try:
                    result = transcribe_features(features, model)
                    write_transcription(job, result, fmt, model.source, force)
                except (OSError, ValueError) as exc:
                    error = exc
                except MemoryError as exc:
                    error = MemoryError(f"out of memory transcribing it ({exc})")
            if error is None:
                written.append(job.output)
            else:
                failed.append((index, job.audio, str(error).removeprefix(f"{job.audio}: ")))
            bar.update()
    return Outcome(written, [(audio, message) for _, audio, message in sorted(failed)])
