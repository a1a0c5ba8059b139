"""The MLflow UI in a real browser, over a store that chordrec itself made.

A tiny two-run Hydra sweep logs into a fresh store; ``chordrec ui`` serves it and
``chordrec compare`` prints a link to the two runs' charts. Headless Chromium then opens
the links a user is given and checks what they show: the training runs (not the GenAI
overview), the sweep's parent row and its children, the RWC-Pop datasets, the compare
charts, a run's metric sections and the sweep's summary figures on its parent run. Every locator follows the UI's visible text, ARIA
roles and ``data-testid`` attributes, never its generated CSS classes.

Every check saves screenshots in the module's temporary directory, and a failing check
names them. With ``CHORDREC_UI_SCREENSHOTS=<dir>`` two of them are also copied there as
``runs.png`` and ``compare.png`` (the images of the README and docs/reference.md: ``CHORDREC_UI_SCREENSHOTS=docs/ui``).

Needs the Debian packages chromium and chromium-driver (``/usr/bin/chromium``,
``/usr/bin/chromedriver``); without them the tests fail, saying so.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from mlflow.tracking import MlflowClient
from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from chordrec import tracking
from tests.conftest import OOD, free_port, subprocess_env

pytestmark = [pytest.mark.integration, pytest.mark.system]

T = TypeVar("T")

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW_SIZE = "1600,1000"
WAIT_S = 30
"""Longest wait for one thing in the page (a page load takes 1.5-5 s)."""

SCREENSHOTS_ENV = "CHORDREC_UI_SCREENSHOTS"
README_IMAGES = {"c_dataset_column": "runs.png", "d_compare_charts": "compare.png"}
"""Screenshots copied to $CHORDREC_UI_SCREENSHOTS, and the names they get there."""

EXPERIMENT = "chordrec"
RUN_NAMES = ("ui-seed0", "ui-seed1")
SWEEP = [
    "seed=0,1",
    "run_name='ui-seed${seed}'",  # distinct names, to find each run in the UI
    "split.max_songs=3",
    "data.level=beat",
    "seq_len=16",
    "optimizer.lr=0.02",  # curves that move in five epochs
    "trainer.max_epochs=5",
    "trainer.num_threads=1",
    "trainer.progress=false",
    "tracking.log_model=false",
    "tracking.system_metrics=true",
    "tracking.system_metrics_interval_s=0.5",
]
"""A short real sweep: two runs of a few seconds each, with system metrics."""

MODEL_SECTIONS = {"train", "val", "test", "time", "fit", "decode"}
"""The chart sections (metric prefixes) a run's "Model metrics" tab must show."""

# The assistant's side panel and pop-ups would cover the page; the training view
# (mlflow.workflowType_v1) is deliberately not stored: the printed links must carry it.
QUIET_ASSISTANT = """
localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
localStorage.setItem('mlflow.detectIssues.guidanceShown_v1', 'true');
"""

# ------------------------------------------------------------------------ locators

X_H2 = "//h2[normalize-space(.)='{}']"
X_GRID = "//div[@role='grid']"
X_RUN_LINK = "//div[@role='gridcell']//a[normalize-space(.)='{}']"
X_EXPANDER = "//div[@role='gridcell'][.//a[normalize-space(.)='{}']]//button"
"""A parent row's expand/collapse button: the only button in its run-name cell."""
X_RUN_ROW = "//div[@role='row'][@aria-rowindex = {}/ancestor::div[@role='row'][1]/@aria-rowindex]"
"""Every grid row of a run (the grid draws each run as two rows), given its link's XPath."""
X_DATASET_HEADER = "//div[@role='columnheader'][normalize-space(.)='Dataset']"
X_DATASET_BUTTON = "//button[@data-testid='open-dataset-drawer']"
X_EXPAND_ROWS = "//button[normalize-space(.)='Expand rows']"
X_DRAWER = "//div[@role='dialog'][.//*[normalize-space(text())='Data details for']]"
X_MATCHING = "//*[normalize-space(.)='{} matching runs']"
X_CHART_SEARCH = "//input[@placeholder='Search metric charts']"
X_SECTION_HEADER = "//*[@data-testid='experiment-view-compare-runs-section-header']"
X_SECTION = X_SECTION_HEADER + "[.//*[normalize-space(text())='{}']]"
X_CHART_CARD = "//div[@data-testid='experiment-view-compare-runs-card'][.//h4[@title='{}']]"
X_SYSTEM_CHART = "//h4[starts-with(@title, 'system/')]"
X_TAB = "//button[@role='tab'][normalize-space(.)='{}']"
X_ARTIFACT = "//*[normalize-space(text())='{}']"
"""An artifact (file or folder) in a run's artifact tree, by its name."""
IMAGE_SHOWN = """
return document.body.innerText.includes(arguments[0])
    && [...document.images].some(image => image.complete && image.naturalWidth >= 400);
"""
"""Whether the page names an artifact and shows an image of figure size (the artifact
view loads it as a blob: its address does not name it)."""

# ------------------------------------------------------------------------ the store


@dataclass(frozen=True)
class LoggedRun:
    """A run as MLflow recorded it."""

    run_id: str
    name: str
    description: str


@dataclass(frozen=True)
class Sweep:
    """The store a real sweep logged: its parent run and the two child runs."""

    store: Path
    experiment_id: str
    parent: LoggedRun
    children: tuple[LoggedRun, ...]
    digest: str
    """The RWC-Pop datasets' MLflow digest."""
    ood_digest: str
    """The MLflow digest of the out-of-domain songs the first child was scored on."""
    experiment_kind: str | None
    """The experiment's ``mlflow.experimentKind`` tag."""


def _digest(run, name: str) -> str:
    """The MLflow digest of ``run``'s dataset input ``name``."""
    (digest,) = [d.dataset.digest for d in run.inputs.dataset_inputs if d.dataset.name == name]
    return digest


def _logged(run) -> LoggedRun:
    return LoggedRun(
        run.info.run_id, run.info.run_name, run.data.tags.get("mlflow.note.content", "")
    )


@pytest.fixture(scope="module")
def _chromium() -> None:
    """Fail at once (before the sweep) when the browser is missing: never skip."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(
            f"the MLflow UI browser test needs {' and '.join(missing)}: install the Debian "
            "packages chromium and chromium-driver (apt-get install chromium chromium-driver)",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def sweep(_chromium: None, data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    """``python -m chordrec.train -m seed=0,1 ...`` into a fresh store."""
    root = tmp_path_factory.mktemp("ui")
    store = root / "mlruns"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "chordrec.train",
            "-m",
            f"data.root={data_root}",
            f"ood.root={OOD}",
            f"tracking.store_dir={store}",
            f"hydra.sweep.dir={root / 'sweep'}",
            *SWEEP,
        ],
        cwd=root,
        capture_output=True,
        text=True,
        env=subprocess_env(MLFLOW_DISABLE_TELEMETRY="true"),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking_uri=tracking.store_uri(store))
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    parent = parents[0]
    children = sorted(
        (r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
        key=lambda r: r.info.run_name,
    )
    assert [r.info.run_name for r in children] == list(RUN_NAMES)
    assert parent.info.run_name.startswith("sweep ")
    return Sweep(
        store=store,
        experiment_id=experiment.experiment_id,
        parent=_logged(parent),
        children=tuple(_logged(r) for r in children),
        digest=_digest(children[0], "RWC-Pop/train"),
        ood_digest=_digest(children[0], "chordrec-ood-synth/validation"),
        experiment_kind=experiment.tags.get("mlflow.experimentKind"),
    )


# ------------------------------------------------------------------------ the servers


@dataclass(frozen=True)
class Ui:
    """``chordrec ui`` serving the sweep's store."""

    base_url: str
    runs_link: str
    """The link it printed: "training runs of experiment chordrec: <URL>"."""


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.read() == b"OK"
    except OSError:
        return False


def _stop(server: subprocess.Popen) -> None:
    """Stop ``chordrec ui`` and everything it started (its own process group)."""
    server.terminate()  # it stops its MLflow server on SIGTERM
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # the MLflow server's own workers end shortly after
        try:
            os.killpg(server.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.25)
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def ui(sweep: Sweep) -> Iterator[Ui]:
    """``chordrec ui --store <store> --port <free port>``, stopped at the end."""
    port = free_port()
    log = sweep.store.parent / "ui.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "chordrec", "ui", "--store", str(sweep.store)]
            + ["--port", str(port)],
            cwd=sweep.store.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            # unbuffered: the link is read from the log while the server runs
            env=subprocess_env(MLFLOW_DISABLE_TELEMETRY="true", PYTHONUNBUFFERED="1"),
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while not _healthy(base):
            assert server.poll() is None, f"chordrec ui exited: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no {base}/health: {log.read_text()[-3000:]}"
            time.sleep(0.5)
        prefix = f"training runs of experiment {EXPERIMENT}: "
        printed = [line for line in log.read_text().splitlines() if line.startswith(prefix)]
        assert printed, f"chordrec ui printed no link: {log.read_text()[-3000:]}"
        yield Ui(base, printed[0].removeprefix(prefix))
    finally:
        _stop(server)


@pytest.fixture(scope="module")
def compare_link(sweep: Sweep, ui: Ui) -> str:
    """The chart link that ``chordrec compare RUN1 RUN2 --ui-url <the UI>`` prints."""
    done = subprocess.run(
        [sys.executable, "-m", "chordrec", "compare"]
        + [r.run_id for r in sweep.children]
        + ["--store", str(sweep.store), "--ui-url", ui.base_url],
        capture_output=True,
        text=True,
        env=subprocess_env(MLFLOW_DISABLE_TELEMETRY="true"),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    prefix = "MLflow UI, charts: "
    links = [line for line in done.stdout.splitlines() if line.startswith(prefix)]
    assert len(links) == 1, done.stdout
    return links[0].removeprefix(prefix)


# ------------------------------------------------------------------------ the browser


class Browser:
    """Headless Chromium with waits that survive React's re-renders, and screenshots
    that a failing check names."""

    def __init__(self, driver: webdriver.Chrome, shots: Path) -> None:
        self.driver = driver
        self.shots = shots
        self.taken: list[Path] = []

    def open(self, url: str, ready: str) -> None:
        """Load ``url`` afresh, with no UI state stored for its site, and wait until
        ``ready`` (an XPath) is visible. Through about:blank, since a hash-only change
        of address does not reload the app."""
        self.driver.get("about:blank")
        origin = url.split("/#", 1)[0].rstrip("/")
        self.driver.execute_cdp_cmd(
            "Storage.clearDataForOrigin", {"origin": origin, "storageTypes": "local_storage"}
        )
        self.driver.get(url)
        self.visible(ready)

    def until(self, condition: Callable[[], T], message: str) -> T:
        """Wait until ``condition()`` is truthy, finding elements anew on every try."""
        return WebDriverWait(
            self.driver,
            WAIT_S,
            ignored_exceptions=(StaleElementReferenceException, NoSuchElementException),
        ).until(lambda _: condition(), message)

    def visible(self, xpath: str):
        """The first visible element at ``xpath``, once there is one."""
        return WebDriverWait(self.driver, WAIT_S).until(
            EC.visibility_of_element_located((By.XPATH, xpath)), f"nothing visible at {xpath}"
        )

    def gone(self, xpath: str) -> None:
        """Wait until nothing at ``xpath`` is visible."""
        WebDriverWait(self.driver, WAIT_S).until(
            EC.invisibility_of_element_located((By.XPATH, xpath)), f"still visible: {xpath}"
        )

    def click(self, xpath: str) -> None:
        """Click the element at ``xpath``, found anew if a re-render replaced it."""

        def clicked() -> bool:
            self.driver.find_element(By.XPATH, xpath).click()
            return True

        WebDriverWait(
            self.driver,
            WAIT_S,
            ignored_exceptions=(
                StaleElementReferenceException,
                NoSuchElementException,
                ElementClickInterceptedException,
            ),
        ).until(lambda _: clicked(), f"cannot click {xpath}")

    def text(self, xpath: str) -> str:
        """The visible text of the first element at ``xpath``."""
        return self.driver.find_element(By.XPATH, xpath).text

    def texts(self, xpath: str) -> list[str]:
        """The rendered text (innerText) of every element at ``xpath``, read at once."""
        return self.driver.execute_script(
            """const found = document.evaluate(arguments[0], document, null,
                   XPathResult.ORDERED_NODE_SNAPSHOT_TYPE, null);
               const texts = [];
               for (let i = 0; i < found.snapshotLength; i++)
                   texts.push(found.snapshotItem(i).innerText);
               return texts;""",
            xpath,
        )

    def scroll_to(self, xpath: str, margin_px: int = 0) -> None:
        """Scroll the element at ``xpath`` to the top of its scroll area, ``margin_px``
        below it (clear of a sticky search bar): charts render only once in view."""
        self.until(
            lambda: self.driver.execute_script(
                """arguments[0].style.scrollMarginTop = arguments[1] + 'px';
                   arguments[0].scrollIntoView({block: 'start'});
                   return true;""",
                self.driver.find_element(By.XPATH, xpath),
                margin_px,
            ),
            f"cannot scroll to {xpath}",
        )

    def section_counts(self) -> dict[str, int]:
        """The chart sections in view: name -> number of charts ("val\\n(11)\\nAdd chart")."""
        sections = {}
        for text in self.texts(X_SECTION_HEADER):
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if len(lines) >= 2 and lines[1].startswith("("):
                sections[lines[0]] = int(lines[1].strip("()"))
        return sections

    def sections_with(self, names: set[str]) -> dict[str, int]:
        """:meth:`section_counts`, once it has every section in ``names``."""
        found: dict[str, int] = {}

        def complete() -> bool:
            found.clear()
            found.update(self.section_counts())
            return names <= found.keys()

        self.until(complete, f"chart sections {sorted(names)}")
        return found

    def shot(self, name: str) -> Path:
        """Save a screenshot ``<name>.png``; README images also go to
        $CHORDREC_UI_SCREENSHOTS."""
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        self.taken.append(path)
        target = os.environ.get(SCREENSHOTS_ENV)
        if target and name in README_IMAGES:
            Path(target).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(target) / README_IMAGES[name])
        return path

    @contextmanager
    def check(self, name: str) -> Iterator[None]:
        """Run one check; if it fails, screenshot the page and fail naming every
        screenshot taken so far and the page's address."""
        try:
            yield
        except (AssertionError, WebDriverException) as exc:
            try:
                self.shot(f"{name}_FAILED")
                url = self.driver.current_url
            except WebDriverException as lost:
                url = f"(browser lost: {lost.msg})"
            shots = "\n  ".join(str(p) for p in self.taken)
            reason = exc.msg if isinstance(exc, WebDriverException) else exc  # no stack dump
            raise AssertionError(
                f"check {name} failed at {url}: {type(exc).__name__}: {reason}\n"
                f"screenshots:\n  {shots}"
            ) from exc


@pytest.fixture(scope="module")
def browser(_chromium: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Headless Chromium with a fresh profile, quit at the end."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for argument in (
        "--headless=new",
        "--no-sandbox",
        f"--window-size={WINDOW_SIZE}",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": QUIET_ASSISTANT})
        yield Browser(driver, tmp_path_factory.mktemp("screenshots"))
    finally:
        driver.quit()


# ------------------------------------------------------------------------ the checks


def _expand_sweep(browser: Browser, sweep: Sweep) -> None:
    """Expand the sweep's parent row (collapsed by default) to its two children."""
    assert not browser.driver.find_elements(By.XPATH, X_RUN_LINK.format(RUN_NAMES[0])), (
        "the sweep's runs should be collapsed under its parent row"
    )
    browser.click(X_EXPANDER.format(sweep.parent.name))
    for name in RUN_NAMES:
        browser.visible(X_RUN_LINK.format(name))


def test_a_the_printed_link_opens_the_training_runs(browser: Browser, sweep: Sweep, ui: Ui):
    """`chordrec ui`'s link opens the runs table, not the GenAI overview, in a browser
    that never chose the training view (whatever the experiment's kind tag says)."""
    assert sweep.experiment_kind == "custom_model_development"
    assert ui.runs_link == tracking.experiment_url(ui.base_url, sweep.experiment_id)
    with browser.check("a"):
        browser.open(ui.runs_link, X_H2.format("Runs"))
        browser.visible(X_GRID)
        browser.visible(X_RUN_LINK.format(sweep.parent.name))
        browser.visible(X_MATCHING.format(3))
        assert not browser.driver.find_elements(By.XPATH, X_H2.format("Overview"))
        assert f"/#/experiments/{sweep.experiment_id}/runs?" in browser.driver.current_url
        assert "workflowType=machine_learning" in browser.driver.current_url
        stored = browser.driver.execute_script(
            "return localStorage.getItem('mlflow.workflowType_v1')"
        )
        assert stored is None, f"the training view came from storage ({stored}), not the link"
        browser.shot("a_training_runs")


def test_b_the_sweep_row_expands_to_its_runs(browser: Browser, sweep: Sweep, ui: Ui):
    """The sweep is one row; its expander shows both runs."""
    with browser.check("b"):
        browser.open(ui.runs_link, X_RUN_LINK.format(sweep.parent.name))
        _expand_sweep(browser, sweep)
        browser.shot("b_sweep_expanded")


def test_c_the_dataset_column_shows_rwc_pop(browser: Browser, sweep: Sweep, ui: Ui):
    """Each run lists RWC-Pop/train, /validation and /test, and "+1": the out-of-domain
    songs it was scored on. The drawer lists all four with their contexts, and shows a
    dataset's profile and digest."""
    with browser.check("c"):
        browser.open(ui.runs_link, X_RUN_LINK.format(sweep.parent.name))
        browser.visible(X_DATASET_HEADER)
        _expand_sweep(browser, sweep)
        browser.click(X_EXPAND_ROWS)  # every dataset of a run, each with its context
        run_datasets = X_RUN_ROW.format(X_RUN_LINK.format(RUN_NAMES[0])) + X_DATASET_BUTTON
        parts = ("train", "validation", "test")
        expected = [f"RWC-Pop/{part} ({sweep.digest})" for part in parts]
        browser.until(  # the cell shows three datasets, then "+1": the out-of-domain songs
            lambda: [t for t in browser.texts(run_datasets) if t] == expected,
            f"{RUN_NAMES[0]}'s datasets are not {expected}",
        )
        cell = run_datasets + "[1]/ancestor::div[@role='gridcell'][1]"
        assert browser.text(cell).split()[-1] == "+1", browser.text(cell)  # the OOD songs
        every = [t for t in browser.texts(X_DATASET_BUTTON) if t]
        assert every and all(t.startswith("RWC-Pop/") for t in every), every
        browser.shot("c_dataset_column")

        browser.click(run_datasets + "[starts-with(normalize-space(.), 'RWC-Pop/validation')]")
        browser.visible(X_DRAWER)
        for line in (
            RUN_NAMES[0],
            "4 datasets used",
            f"chordrec-ood-synth/validation ({sweep.ood_digest})",
            "version: gct634-2018@fb408ed",
            "songs: 3",
            f"Digest: {sweep.digest}",
            "Source type: HTTP",
        ):
            browser.until(lambda line=line: line in browser.text(X_DRAWER), f"no {line!r}")
        # each dataset's context, as a tag whose case CSS may change
        for context in ("training", "validation", "test", "ood_validation"):
            browser.until(
                lambda context=context: context in browser.text(X_DRAWER).casefold().split(),
                f"no context {context!r} in the drawer",
            )
        browser.shot("c_dataset_drawer")
        browser.driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        browser.gone("//div[@role='dialog']")


def test_d_the_compare_link_charts_both_runs(browser: Browser, sweep: Sweep, compare_link: str):
    """`chordrec compare`'s link charts exactly the two runs, val/acc among the charts."""
    with browser.check("d"):
        browser.open(compare_link, X_MATCHING.format(2))
        assert "compareRunsMode=CHART" in browser.driver.current_url
        browser.visible(X_CHART_SEARCH)
        for name in RUN_NAMES:
            browser.visible(X_RUN_LINK.format(name))
        assert not browser.driver.find_elements(By.XPATH, X_RUN_LINK.format(sweep.parent.name))
        browser.sections_with({"train", "val"})
        browser.scroll_to(X_SECTION.format("val"), margin_px=60)  # below the chart search
        card = X_CHART_CARD.format("val/acc")
        browser.visible(card)
        legend = [f"{name} (val/acc)" for name in RUN_NAMES]
        browser.until(
            lambda: all(entry in browser.text(card) for entry in legend),
            f"the val/acc chart lacks the legend {legend}",
        )
        browser.shot("d_compare_charts")


def test_e_a_run_page_has_a_section_per_metric_prefix(browser: Browser, sweep: Sweep, ui: Ui):
    """A run's page: its description; "Model metrics" in sections train, val, test,
    time, fit and decode; "System metrics" with the system/ charts."""
    run = sweep.children[0]
    with browser.check("e"):
        browser.open(
            tracking.run_url(ui.base_url, sweep.experiment_id, run.run_id),
            X_TAB.format("Model metrics"),
        )
        assert run.description
        browser.visible(f"//*[normalize-space(.)={_xpath_literal(run.description)}]")
        browser.shot("e_run_overview")

        browser.click(X_TAB.format("Model metrics"))
        sections = browser.sections_with(MODEL_SECTIONS)
        assert all(sections[name] > 0 for name in MODEL_SECTIONS), sections
        assert "System metrics" not in sections, sections
        assert "/model-metrics" in browser.driver.current_url
        browser.shot("e_run_sections")

        browser.click(X_TAB.format("System metrics"))
        browser.visible(X_SYSTEM_CHART)
        sections = browser.sections_with({"System metrics"})
        assert MODEL_SECTIONS.isdisjoint(sections), sections
        browser.shot("e_system_metrics")


def test_f_the_sweeps_parent_run_holds_its_summary_figures(browser: Browser, sweep: Sweep, ui: Ui):
    """The parent run's Artifacts tab lists the sweep's summary and figures; the
    factors figure opens as an image."""
    with browser.check("f"):
        browser.open(
            tracking.run_url(ui.base_url, sweep.experiment_id, sweep.parent.run_id),
            X_TAB.format("Artifacts"),
        )
        # the run loaded (its description shown) before its artifacts are asked for
        browser.visible(f"//*[normalize-space(.)={_xpath_literal(sweep.parent.description)}]")
        browser.click(X_TAB.format("Artifacts"))
        browser.visible(X_ARTIFACT.format("summary.md"))
        browser.click(X_ARTIFACT.format("figures"))
        browser.visible(X_ARTIFACT.format("learning_curves.png"))
        browser.click(X_ARTIFACT.format("factors.png"))
        browser.until(
            lambda: browser.driver.execute_script(IMAGE_SHOWN, "factors.png"),
            "the factors figure is not shown",
        )
        browser.shot("f_sweep_figures")


def _xpath_literal(text: str) -> str:
    """``text`` as an XPath 1.0 string literal (which has no escapes)."""
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return "concat(" + ', "\'", '.join(f"'{part}'" for part in text.split("'")) + ")"
