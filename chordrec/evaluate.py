"""Re-score a run's best weights as a new run: ``chordrec evaluate RUN_ID [key=value ...]``.

    python -m chordrec.evaluate <run id>                              # as the run was scored
    python -m chordrec.evaluate <run id> trainer.eval_overlap=false   # evaluated otherwise
    python -m chordrec.evaluate <run id> decode=argmax split.max_songs=4

The new run takes the evaluated run's own config, changed by the overrides; where it
runs and logs (``trainer.device``, ``data.root``, ``tracking.*``, ...) comes from the
command line and its defaults, as for ``python -m chordrec.train``. It is tagged
``evaluated_run=<run id>`` and logs everything a training run logs except epochs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from chordrec import run as lifecycle
from chordrec.errors import UserError
from chordrec.run import MACHINE_SETTINGS
from chordrec.train import compose_config, report_user_error


def main(argv: Sequence[str] | None = None) -> int:
    """Re-score a run's best weights as a new run (``chordrec evaluate``); returns the exit status."""
    parser = argparse.ArgumentParser(prog="chordrec evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_id", help="the MLflow run whose best weights are scored")
    parser.add_argument("overrides", nargs="*", help="key=value changes to that run's config")
    args = parser.parse_args(argv)
    machine = [
        o for o in args.overrides if o.split("=", 1)[0].lstrip("+").startswith(MACHINE_SETTINGS)
    ]
    try:
        metrics = lifecycle.evaluate(args.run_id, compose_config(machine), args.overrides)
    except UserError as exc:
        report_user_error("chordrec evaluate", exc)
    print(
        f"test frame accuracy {metrics['test/frame_acc']:.4f} "
        f"(validation {metrics['val/frame_acc']:.4f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
