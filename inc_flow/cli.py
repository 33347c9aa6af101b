"""``inc-flow``: the command line. The only module that prints tables or calls ``sys.exit``.

inc-flow tune [CONFIG] [-o OUTPUT]     tune, save best_configure.yaml + weights
inc-flow check CONFIG                  validate a config, do no work
inc-flow stats OUTPUT --config CONFIG  Mixed Precision Statistics of a saved model
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from inc_flow.errors import IncFlowError

DEFAULT_CONFIG = "conf/lenet_static.yaml"
EXIT_NOT_FOUND = 3  # tuning finished, but no plan met the accuracy target


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s", "%H:%M:%S"))
    root = logging.getLogger("inc_flow")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def _cmd_tune(args: argparse.Namespace) -> int:
    from inc_flow.api import as_config, quantize

    cfg = as_config(args.config)
    outcome = quantize(cfg)
    if outcome.q_model is None:
        return EXIT_NOT_FOUND
    output = Path(args.output or Path("outputs") / cfg.model.name)
    outcome.q_model.save(output)
    logging.getLogger("inc_flow").info("saved best_configure.yaml and weights to %s", output)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from inc_flow.config import Config

    cfg = Config.from_yaml(args.config)
    print(f"{args.config}: OK ({cfg.model.name}, {cfg.quantization.approach})")
    if args.dump:
        print(cfg.to_yaml())
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from inc_flow import fx
    from inc_flow.api import as_config
    from inc_flow.io import load, plan_from_configure, read_configure
    from inc_flow.modeling import build_model
    from inc_flow.stats import format_statistics, statistics_frame

    cfg = as_config(args.config)
    if not cfg.model.factory:
        raise IncFlowError(f"{args.config}: `model.factory` is needed to rebuild the model")
    model = load(args.output, build_model(cfg.model.factory))
    plan = plan_from_configure(read_configure(args.output))
    rows = fx.op_statistics(model, plan.approach)
    for line in format_statistics(statistics_frame(rows)):
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inc-flow", description=__doc__.split("\n")[0])
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    tune = sub.add_parser("tune", help="tune and save the best int8 model")
    tune.add_argument("config", nargs="?", default=DEFAULT_CONFIG, help="yaml config")
    tune.add_argument("-o", "--output", help="output directory (default outputs/<model.name>)")
    tune.set_defaults(func=_cmd_tune)

    check = sub.add_parser("check", help="validate a config without doing any work")
    check.add_argument("config")
    check.add_argument("--dump", action="store_true", help="print the config with defaults")
    check.set_defaults(func=_cmd_check)

    stats = sub.add_parser("stats", help="Mixed Precision Statistics of a saved model")
    stats.add_argument("output", help="directory with best_configure.yaml")
    stats.add_argument("--config", required=True, help="the config that names model.factory")
    stats.set_defaults(func=_cmd_stats)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        return int(args.func(args))
    except IncFlowError as e:
        print(f"inc-flow: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
