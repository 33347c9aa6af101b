"""``inc-flow``: the command line (the only module that prints tables or calls ``sys.exit``).

The user-facing text (description, commands, exit codes) is :data:`DESCRIPTION` and
:data:`EPILOG`; ``inc-flow --help`` shows them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inc_flow.errors import IncFlowError
from inc_flow.vocab import Role

DEFAULT_CONFIG = "conf/lenet_static.yaml"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DESCRIPTION = """\
Find the fastest int8 version of a PyTorch model that meets an accuracy target.
A yaml config (Intel Neural Compressor 1.x keys) names the model, its data and the target;
every tuning trial is recorded in MLflow, and the best model is saved and registered."""
EPILOG = """\
examples:
  inc-flow check conf/lenet_static.yaml           validate a config; no work
  inc-flow tune conf/lenet_static.yaml -o outputs/lenet
  inc-flow tune conf/lenet_static.yaml --log-level DEBUG
  inc-flow report --experiment lenet -o report.html
  inc-flow COMMAND --help                         the options of one command

exit codes:
  0  done (tune: a model met the target and is saved and recorded)
  1  an unexpected fault (the message names the exception)
  2  bad input: config, data, model, options, or a tracking store unreachable at start
     (the message names it)
  3  tuning finished, but no plan met the accuracy target
  4  tuned (and saved), but the MLflow record is incomplete: run the same command again
     once the tracking store is back"""
EXIT_NOT_FOUND = 3  # tuning finished, but no plan met the accuracy target
EXIT_UNRECORDED = 4  # tuned (and saved), but MLflow failed mid-study: rerun to record it


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s", "%H:%M:%S"))
    root = logging.getLogger("inc_flow")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def _config(args: argparse.Namespace):  # -> Config, with ``--storage`` applied
    from dataclasses import replace

    from inc_flow.api import as_config
    from inc_flow.config.checks import check_storage
    from inc_flow.config.problems import Problems

    cfg = as_config(args.config)
    if getattr(args, "storage", None):
        problems = Problems()
        check_storage(problems, "--storage", args.storage)
        problems.raise_if_any()
        cfg = replace(cfg, tuning=replace(cfg.tuning, storage=args.storage))
    return cfg


def _cmd_tune(args: argparse.Namespace) -> int:
    from inc_flow.api import quantize

    cfg = _config(args)
    if args.worker:
        outcome = quantize(cfg, role=Role.WORKER)
        n = len(outcome.result.records)
        logging.getLogger("inc_flow").info(
            "worker done: the study has %d trials; run `inc-flow finalize` once all workers "
            "are done",
            n,
        )
        return _unrecorded(outcome, 0)
    return _tune_and_save(cfg, args.output, Role.TUNE)


def _output(cfg: Any, output: str | None) -> Any:
    """``-o`` (default ``outputs/<model.name>``), checked as ``check`` checks it."""
    from inc_flow.config.preflight import default_output, preflight

    path = output or default_output(cfg)
    preflight(cfg, path, "--output")
    return path


def _tune_and_save(cfg: Any, output: str | None, role: str) -> int:
    """Tune (or finalize); the best model is saved to the output before it is registered."""
    from inc_flow.api import quantize

    outcome = quantize(cfg, role=role, output=_output(cfg, output))
    if outcome.next_steps:
        print(outcome.next_steps, flush=True)
    return _unrecorded(outcome, EXIT_NOT_FOUND if outcome.q_model is None else 0)


def _unrecorded(outcome: Any, code: int) -> int:
    """``code``, or :data:`EXIT_UNRECORDED` (said on stderr) when MLflow missed part of the
    study: the result is kept locally, and the same command run again records it."""
    if not outcome.unrecorded:
        return code
    print(
        f"inc-flow: the MLflow record is incomplete: not recorded: "
        f"{', '.join(outcome.unrecorded)}; the result is kept locally (Optuna study"
        f"{', saved model' if outcome.q_model is not None and code == 0 else ''}): run the "
        "same command again once the tracking store is back to record it",
        file=sys.stderr,
    )
    return EXIT_UNRECORDED


def _cmd_finalize(args: argparse.Namespace) -> int:
    return _tune_and_save(_config(args), args.output, Role.FINALIZE)


def _cmd_check(args: argparse.Namespace) -> int:
    from inc_flow.config.sections import Config

    cfg = Config.from_yaml(args.config)
    _output(cfg, args.output)  # the workspace and output folders tune would write
    print(f"{args.config}: OK ({cfg.model.name}, {cfg.quantization.approach})")
    if args.dump:
        print(cfg.to_yaml())
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from inc_flow.api import as_config
    from inc_flow.model.factory import build_model
    from inc_flow.model.output import QuantizedModel, load, plan_from_configure, read_configure
    from inc_flow.quant.stats import format_statistics

    cfg = as_config(args.config)
    if not cfg.model.factory:
        raise IncFlowError(f"{args.config}: `model.factory` is needed to rebuild the model")
    model = load(args.output, build_model(cfg.model.factory))
    plan = plan_from_configure(read_configure(args.output))
    frame = QuantizedModel(model, plan, None).statistics  # openvino: counted by the plan
    for line in format_statistics(frame):
        print(line)
    return 0


def _client(uri: str | None):  # -> MlflowClient
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri) if uri else MlflowClient()


def _log_to_project_run(client, path: Path) -> None:
    """Under ``mlflow run -e report`` the HTML also becomes an artifact of the project run."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id:
        client.log_artifact(run_id, str(path))


def _cmd_report(args: argparse.Namespace) -> int:
    from inc_flow.record.report import write_report

    if not args.experiment and not args.run:
        raise IncFlowError("report needs --experiment NAME, --run PARENT_RUN_ID or both")
    client = _client(args.tracking_uri)
    path = write_report(args.output, args.experiment or None, args.run or None, client)
    _log_to_project_run(client, path)
    print(f"wrote {path}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from inc_flow.record.report import write_comparison

    experiments = [e for e in args.experiment if e]
    runs = [r for r in args.run if r]
    if not experiments and not runs:
        raise IncFlowError("compare needs at least one --experiment NAME or --run PARENT_RUN_ID")
    client = _client(args.tracking_uri)
    path = write_comparison(args.output, experiments, runs, client)
    _log_to_project_run(client, path)
    print(f"wrote {path}")
    return 0


def _version() -> str:
    """``inc-flow X (torch Y, mlflow Z, optuna W, Python V)``, from the installed metadata."""
    from importlib.metadata import PackageNotFoundError, version

    def of(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    deps = ", ".join(f"{d} {of(d)}" for d in ("torch", "mlflow", "optuna"))
    return f"inc-flow {of('inc-flow')} ({deps}, Python {sys.version.split()[0]})"


def _global_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """Options every command takes, before or after its name (``inc-flow tune C --log-level
    DEBUG``). On a command they default to SUPPRESS, so they override only when given."""
    group = parser.add_argument_group("global options")
    group.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="INFO" if top else argparse.SUPPRESS,
        metavar="LEVEL",
        help=f"how much to print: {', '.join(LOG_LEVELS)} (default INFO)",
    )


def _command(sub: Any, name: str, summary: str, details: str = "") -> argparse.ArgumentParser:
    parser = sub.add_parser(
        name,
        help=summary,
        description=f"{summary[0].upper()}{summary[1:]}.{' ' + details if details else ''}",
        epilog="exit codes: see `inc-flow --help`",
    )
    _global_options(parser, top=False)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inc-flow",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    _global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tune = _command(
        sub,
        "tune",
        "tune a model and save the best int8 model",
        "Writes best_configure.yaml and best_model_weights.pt to the output folder, records "
        "every trial in MLflow and registers the best model. A study that was stopped goes "
        "on where it stopped when the same command runs again.",
    )
    tune.add_argument(
        "config", nargs="?", default=DEFAULT_CONFIG, help=f"yaml config (default {DEFAULT_CONFIG})"
    )
    tune.add_argument("-o", "--output", help="output folder (default outputs/<model.name>)")
    storage_help = (
        "Optuna storage URL, e.g. postgresql+psycopg2://host/optuna; overrides tuning.storage "
        "(PostgreSQL needs pip install 'inc-flow[postgres]')"
    )
    tune.add_argument("--storage", help=storage_help)
    tune.add_argument(
        "--worker",
        action="store_true",
        help="one of several workers of the study: run trials only; no output, no "
        "registration (run `finalize` once afterwards)",
    )
    tune.set_defaults(func=_cmd_tune)

    fin = _command(
        sub,
        "finalize",
        "after the workers: save the best model, register it once, end the run",
        "Runs no trial.",
    )
    fin.add_argument("config", help="yaml config (the workers' config)")
    fin.add_argument("--storage", help=storage_help)
    fin.add_argument("-o", "--output", help="output folder (default outputs/<model.name>)")
    fin.set_defaults(func=_cmd_finalize)

    check = _command(
        sub,
        "check",
        "validate a config and the folders tune would write, without doing any work",
    )
    check.add_argument("config", help="yaml config")
    check.add_argument(
        "-o", "--output", help="the output tune would get (default outputs/<model.name>)"
    )
    check.add_argument("--dump", action="store_true", help="print the config with defaults")
    check.set_defaults(func=_cmd_check)

    stats = _command(
        sub, "stats", "print the Mixed Precision Statistics (op types, int8/fp32) of a saved model"
    )
    stats.add_argument("output", help="folder with best_configure.yaml")
    stats.add_argument("--config", required=True, help="the config that names model.factory")
    stats.set_defaults(func=_cmd_stats)

    uri_help = "MLflow tracking URI (default: MLFLOW_TRACKING_URI, then MLflow's default)"
    rep = _command(sub, "report", "write the HTML report of one study from its MLflow runs")
    rep.add_argument("--experiment", help="MLflow experiment (the config's model.name)")
    rep.add_argument("--run", default="", help="the study's parent run id (default: latest)")
    rep.add_argument("-o", "--output", default="report.html", help="HTML file to write")
    rep.add_argument("--tracking-uri", help=uri_help)
    rep.set_defaults(func=_cmd_report)

    comp = _command(sub, "compare", "write an HTML comparison of several studies")
    comp.add_argument(
        "--experiment", action="append", default=[], help="every study of this experiment"
    )
    comp.add_argument("--run", action="append", default=[], help="a study's parent run id")
    comp.add_argument("-o", "--output", default="comparison.html", help="HTML file to write")
    comp.add_argument("--tracking-uri", help=uri_help)
    comp.set_defaults(func=_cmd_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        return int(args.func(args))
    except IncFlowError as e:
        print(f"inc-flow: error: {e}", file=sys.stderr)
        _print_notes(e)
        return 2
    except Exception as e:  # noqa: BLE001 - not bad input: a fault (store down, disk full)
        logging.getLogger("inc_flow").debug("unexpected error", exc_info=True)
        print(f"inc-flow: failed: {type(e).__name__}: {e}", file=sys.stderr)
        _print_notes(e)
        return 1


def _print_notes(error: BaseException) -> None:
    """What inc_flow added to an error on its way up (where the saved model is)."""
    for note in getattr(error, "__notes__", ()):
        print(f"inc-flow: {note}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
