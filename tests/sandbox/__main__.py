"""python -m tests.sandbox up|down|status|report|ssh|reboot (see tests/sandbox/__init__.py)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.sandbox import paths
from tests.sandbox.world import Ports, Sandbox, SandboxError


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.sandbox", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "report", "ssh", "reboot"])
    parser.add_argument("rest", nargs="*", help="ssh: the command to run on the instance")
    parser.add_argument("--state-dir", type=Path, default=paths.DEFAULT_STATE_DIR)
    defaults = Ports.defaults()
    for field in dataclasses.fields(Ports):
        parser.add_argument(
            f"--{field.name.replace('_', '-')}-port",
            type=int,
            default=getattr(defaults, field.name),
            help=f"default sandbox_{field.name}_port from inventory/sandbox",
        )
    parser.add_argument("--x-rate", type=float, default=5.0, help="posts/s the X stand-in replays")
    parser.add_argument(
        "--wait", type=float, default=90, help="report: seconds to wait for objects"
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    state_dir = args.state_dir.resolve()
    ports = Ports(**{f.name: getattr(args, f"{f.name}_port") for f in dataclasses.fields(Ports)})
    saved = state_dir / "state.json"
    if args.command != "up" and saved.exists():  # the ports of the sandbox that is there
        ports = Ports(**json.loads(saved.read_text())["ports"])
    world = Sandbox(state_dir, ports, x_rate=args.x_rate)
    try:
        if args.command == "up":
            world.up()
            print(f"sandbox up: ssh -i {world.ssh_key} -p {ports.ssh} ubuntu@127.0.0.1")
        elif args.command == "down":
            world.down()
        elif args.command == "status":
            print(json.dumps(world.status(), indent=2))
            return 0 if world.running() else 3
        elif args.command == "reboot":
            world.reboot()
        elif args.command == "ssh":
            command = world.ssh_command(" ".join(args.rest))
            os.execvp(command[0], command)
        elif args.command == "report":
            from tests.sandbox.report import report

            return report(world, wait=args.wait)
    except SandboxError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
