"""The `posttrain` command: parses arguments and dispatches; no logic of its own.

    posttrain validate recipes/*.yaml           every config error at once, no weights loaded
    posttrain plan recipes/sft.yaml             stages, outputs, and which are cached
    posttrain run recipes/sft.yaml stages.math_expert.max_steps=20 [--from STAGE] [--force]
    posttrain report runs/sft                   a web page and a summary of every stage
    posttrain runs                              the runs under runs/, their stages and results
    posttrain compare runs/a runs/b             the evals of two runs side by side
    posttrain stages                            stage types and their config fields
    posttrain rewards list | score NAME --data F.jsonl

User errors print one line per problem and exit with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from posttrain.errors import ConfigError, UserError, machine_error_line


def _load(args: argparse.Namespace, path: str):
    from posttrain.recipe.loader import load_recipe

    recipe = load_recipe(path, getattr(args, "overrides", []) or [], run_dir=getattr(args, "run_dir", None))
    for line in recipe.warnings:
        print(f"warning: {line}", file=sys.stderr)
    return recipe


def cmd_validate(args: argparse.Namespace) -> int:
    # `validate RECIPE... key=value...`: argparse gives every word to `recipes`; a word with '=' that is not a file
    # is an override, applied to every recipe as `run` would.
    words = [*args.recipes, *args.overrides]
    args.recipes = [w for w in words if "=" not in w or os.path.exists(w)]
    args.overrides = [w for w in words if w not in args.recipes]
    if not args.recipes:
        raise UserError("validate: name at least one recipe file, e.g. posttrain validate recipes/sft.yaml")
    problems: list[str] = []
    for path in args.recipes:
        try:
            recipe = _load(args, path)
            print(f"ok: {path} ({len(recipe.stages)} stages: {', '.join(recipe.stage_names)})")
        except ConfigError as e:
            problems += e.problems
    if problems:
        raise ConfigError(problems)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from posttrain.recipe.runner import Runner

    recipe = _load(args, args.recipe)
    plan = Runner(recipe).plan(args.from_stage, args.force)
    table = Table(title=f"{recipe.name}: {recipe.path} -> {recipe.root}")
    for col in ("stage", "type", "needs", "status", "why", "outputs"):
        table.add_column(col)
    colors = {"cached": "green", "resume": "yellow", "run": "cyan"}
    for item in plan:
        outs = ", ".join(item.stage.stage_class.outputs)
        status = f"[{colors[item.status]}]{item.status}[/]"
        table.add_row(item.stage.name, item.stage.type, ", ".join(item.stage.deps), status, item.reason, outs)
    Console().print(table)
    return 0


def _multi_cpu_processes(args: argparse.Namespace) -> int | None:
    """How many CPU processes to start when the launch is several CPU processes on this machine, else None.
    accelerate launches MULTI_CPU through mpirun only; without it `accelerate launch --cpu --num_processes N` starts
    one process, so these launches go through torch.distributed.run (gloo), which accelerate's state reads."""
    import torch

    if args.accelerate_config:
        import yaml

        try:
            config = yaml.safe_load(Path(args.accelerate_config).read_text()) or {}
        except (OSError, yaml.YAMLError):
            return None  # accelerate reports a bad config file itself
        if not isinstance(config, dict) or config.get("distributed_type") != "MULTI_CPU":
            return None
        if int(config.get("num_machines", 1) or 1) > 1:
            return None
        return args.num_processes if args.num_processes > 1 else int(config.get("num_processes", 1) or 1)
    return None if torch.cuda.is_available() else args.num_processes


def _accelerate_command(args: argparse.Namespace, argv: list[str]) -> list[str]:
    """`accelerate launch` re-running this same command in every process (without the launch flags); several CPU
    processes on one machine go through `torch.distributed.run` instead (see `_multi_cpu_processes`)."""
    cpu_processes = _multi_cpu_processes(args)
    if cpu_processes is not None:
        run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(cpu_processes)]
        return [*run, "-m", "posttrain.cli", *argv]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(args.num_processes)]
    if args.accelerate_config:
        launch += ["--config_file", args.accelerate_config]
    else:
        launch += ["--multi_gpu", "--num_machines", "1", "--dynamo_backend", "no"]
    return [*launch, "-m", "posttrain.cli", *argv]


def _launch_with_accelerate(args: argparse.Namespace) -> int:
    import subprocess

    argv, skip = [], False
    for item in args.argv:
        if skip:
            skip = False
        elif item in ("--num-processes", "--accelerate-config"):
            skip = True
        elif not item.startswith(("--num-processes=", "--accelerate-config=")):
            argv.append(item)
    cmd = _accelerate_command(args, argv)
    print("launching:", " ".join(cmd), file=sys.stderr)
    return subprocess.call(cmd)


def cmd_run(args: argparse.Namespace) -> int:
    from posttrain.recipe.runner import Runner

    if (args.num_processes > 1 or args.accelerate_config) and "LOCAL_RANK" not in os.environ:
        return _launch_with_accelerate(args)
    from posttrain import progress
    from posttrain.recipe.console import closing_table

    recipe = _load(args, args.recipe)
    args.run_root = recipe.root  # named by a disk-full message
    runner = Runner(recipe, show_progress=not args.no_progress, verbose=args.verbose, ignore_gates=args.ignore_gates)
    runner.run(args.from_stage, args.force, report=progress.say)
    if int(os.environ.get("RANK", "0")) == 0:
        progress.say("\n" + closing_table(runner.summary))
        progress.say(f"\nall stages done; outputs in {recipe.root}; `posttrain report {recipe.root}` for the web page")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from posttrain.report import write_report

    out = write_report(args.run)
    print(f"report written to {out}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from posttrain.runs import list_runs, run_summary

    table = Table(title=f"runs in {args.run_dir}")
    for col in ("run", "stages", "last finished", "evals"):
        table.add_column(col, overflow="fold")
    for run in list_runs(args.run_dir):
        table.add_row(*run_summary(run))
    Console().print(table)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from posttrain.runs import compare_runs, fmt, read_run

    a, b = read_run(args.run_a), read_run(args.run_b)
    table = Table(title=f"evals: {a.folder} vs {b.folder}")
    for col in ("stage", "metric", a.folder.name, b.folder.name, "difference"):
        table.add_column(col, overflow="fold")
    for stage, metric, x, y, delta in compare_runs(a, b):
        table.add_row(stage, metric, fmt(x), fmt(y), "" if delta is None else f"{delta:+.4g}")
    Console().print(table)
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from posttrain.config import field_help
    from posttrain.stages.base import STAGES

    console = Console()
    for name, cls in STAGES.items():
        table = Table(title=f"type: {name}  outputs: {', '.join(cls.outputs)}", title_justify="left")
        for col in ("field", "type", "default", "help"):
            table.add_column(col)
        for row in field_help(cls.config_class):
            table.add_row(*row)
        console.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posttrain", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def recipe_cmd(name: str, func: Callable, help_text: str, many: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        if many:
            p.add_argument("recipes", nargs="+", help="recipe files")
        else:
            p.add_argument("recipe", help="recipe file, e.g. recipes/sft.yaml")
        p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. stages.sft.max_steps=20 model=/path")
        p.add_argument("--run-dir", help="where runs are written (default: the recipe's run_dir, else runs/)")
        p.set_defaults(func=func)
        return p

    recipe_cmd("validate", cmd_validate, "check recipes without loading weights", many=True)
    for name, func, help_text in (("plan", cmd_plan, "show what will run"), ("run", cmd_run, "run a recipe")):
        p = recipe_cmd(name, func, help_text)
        p.add_argument("--from", dest="from_stage", help="re-run this stage and every stage after it")
        p.add_argument("--force", action="store_true", help="re-run every stage, ignoring the cache")
        if name == "run":
            p.add_argument("--no-progress", action="store_true", help="no progress bars")
            p.add_argument(
                "-v", "--verbose", action="store_true", help="library output on the terminal too (it is in log.txt)"
            )
            p.add_argument("--ignore-gates", action="store_true", help="run on when a stage's eval gate fails")
            p.add_argument(
                "--num-processes", type=int, default=1, help="run through `accelerate launch` with N processes"
            )
            p.add_argument("--accelerate-config", help="accelerate config file, e.g. recipes/accelerate/ddp.yaml")
    p = sub.add_parser("report", help="a web page (report/index.html) and a summary of a run folder")
    p.add_argument("run", help="a run folder, e.g. runs/sft")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("runs", help="the runs under a run directory, with their stages and eval results")
    p.add_argument("--run-dir", default="runs", help="the run directory (default: runs)")
    p.set_defaults(func=cmd_runs)
    p = sub.add_parser("compare", help="the evals of two runs side by side")
    p.add_argument("run_a", help="a run folder, e.g. runs/grpo")
    p.add_argument("run_b", help="another run folder")
    p.set_defaults(func=cmd_compare)
    sub.add_parser("stages", help="stage types and their config fields").set_defaults(func=cmd_stages)
    try:
        from rewards.cli import add_subcommands
    except ImportError:
        pass
    else:
        add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except UserError as e:
        problems = e.problems if isinstance(e, ConfigError) else [str(e)]
        for line in problems:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume where it stopped", file=sys.stderr)
        return 130
    except Exception as e:  # what the machine refused (full disk, unwritable folder) is a user error too
        line = machine_error_line(e, getattr(args, "run_root", None))
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
