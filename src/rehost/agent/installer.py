"""``rehost-replication-installer-init``: installs the agent on a source server and registers it.

Flags follow MGN's Linux installer (``--region``, ``--aws-access-key-id``, ``--aws-secret-access-key``,
``--aws-session-token``, ``--endpoint``, ``--no-prompt``, ``--devices``, ``--force-volumes``, ``--tags``,
``--user-provided-id``, ``--no-replication``) plus ``--foreground`` (run the agent in this process instead
of installing a service), ``--state-dir`` and ``--ca-bundle``. Missing values are asked for unless
``--no-prompt``. Every failure a user can cause ends with one line on stderr and a non-zero exit, before
anything is registered.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from rehost.agent import AGENT_VERSION
from rehost.agent.control import AgentApiClient
from rehost.agent.discovery import (
    Disk,
    identification_hints,
    machine_disks,
    select_disks,
    source_properties,
)
from rehost.agent.sigv4 import Credentials
from rehost.agent.state import DEFAULT_STATE_DIR, AgentState
from rehost.errors import AccessDenied, InvalidInput, RehostError
from rehost.fsutil import temp_name

PROG = "rehost-replication-installer-init"
PRODUCT = "rehost Replication Agent"
AGENT_FILE = "rehost-agent.pyz"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Install the rehost Replication Agent on this source server and register it.",
    )
    p.add_argument("--region", help="region in which the source server is registered")
    p.add_argument("--aws-access-key-id", help="access key ID (asked for when missing)")
    p.add_argument("--aws-secret-access-key", help="secret access key (asked for when missing)")
    p.add_argument("--aws-session-token", help="session token, for temporary credentials (ASIA...)")
    p.add_argument("--endpoint", help="URL of the rehost control plane, e.g. http://10.0.0.5:8080")
    p.add_argument("--no-prompt", action="store_true", help="silent install: never ask")
    p.add_argument("--devices", help="comma-separated disks (block devices or image files) to replicate")
    p.add_argument(
        "--force-volumes", action="store_true", help="replicate exactly --devices (needs --no-prompt)"
    )
    p.add_argument("--tags", nargs="*", default=[], metavar="KEY=VALUE", help="tags for a newly added server")
    p.add_argument("--user-provided-id", help="your own identifier for this server (cannot change later)")
    p.add_argument("--no-replication", action="store_true", help="install without starting replication")
    p.add_argument(
        "--foreground", action="store_true", help="run the agent in the foreground, not as a service"
    )
    p.add_argument(
        "--state-dir", default=DEFAULT_STATE_DIR, help=f"agent state directory ({DEFAULT_STATE_DIR})"
    )
    p.add_argument("--ca-bundle", help="CA certificate(s) to trust for an https endpoint")
    p.add_argument("--version", action="version", version=f"%(prog)s {AGENT_VERSION}")
    return p


class Console:
    """Where the installer talks to the user: prompts read stdin (a secret without echo on a terminal)."""

    def __init__(self, out: TextIO, inp: TextIO, prompt: bool) -> None:
        self.out = out
        self.inp = inp
        self.prompt = prompt

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def ask(self, label: str, secret: bool = False) -> str:
        if not self.prompt:
            raise InvalidInput(f"{label} is required with --no-prompt")
        if secret and self.inp.isatty():
            return getpass.getpass(f"{label}: ").strip()
        self.out.write(f"{label}: ")
        self.out.flush()
        line = self.inp.readline()
        if not line:
            raise InvalidInput(f"{label} was not given (end of input)")
        return line.strip()


def _size_text(size: int) -> str:
    gib = size / 2**30
    if gib >= 1:
        return f"{gib:.0f} GiB" if abs(gib - round(gib)) < 0.05 else f"{gib:.1f} GiB"
    return f"{size / 2**20:.0f} MiB"


def _tags(items: Sequence[str]) -> dict[str, str]:
    tags = {}
    for item in items:
        for part in item.split(","):
            if not part:
                continue
            key, sep, value = part.partition("=")
            if not sep or not key:
                raise InvalidInput(f"Invalid tag {part!r}: use KEY=VALUE")
            tags[key] = value
    return tags


def choose_disks(args: argparse.Namespace, console: Console) -> list[Disk]:
    """The disks to replicate, asking when neither --devices nor --no-prompt says."""
    if args.force_volumes and not (args.no_prompt and args.devices):
        raise InvalidInput("--force-volumes needs --no-prompt and --devices")
    specs: list[str] = [s for s in (args.devices or "").split(",") if s.strip()]
    if not specs and console.prompt:
        console.say("Choose the disks you want to replicate. Your disks are: " + ",".join(machine_disks()))
        answer = console.ask(
            "To replicate some of the disks, type the path of the disks, separated with a comma "
            "(for example, /dev/sda,/dev/sdb). To replicate all disks, press Enter"
        ).strip()
        specs = [s for s in answer.split(",") if s.strip()]
    return select_disks(specs, force_volumes=args.force_volumes)


def install(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """Everything up to and including registration; returns the saved identity."""
    console.say(f"The installation of the {PRODUCT} has started.")
    endpoint = args.endpoint or os.environ.get("REHOST_ENDPOINT") or console.ask("rehost Endpoint URL")
    if not endpoint.startswith(("http://", "https://")):
        raise InvalidInput(f"Invalid endpoint {endpoint!r}: give a URL such as http://10.0.0.5:8080")
    region = args.region or console.ask("AWS Region Name")
    key_id = args.aws_access_key_id or console.ask("AWS Access Key ID")
    secret = args.aws_secret_access_key or console.ask("AWS Secret Access Key", secret=True)
    token = args.aws_session_token
    if not token and key_id.startswith("ASIA"):
        token = console.ask("AWS Session Token", secret=True)
    creds = Credentials(key_id, secret, token or None)
    tags = _tags(args.tags)

    console.say("Identifying volumes for replication.")
    disks = choose_disks(args, console)
    if os.geteuid() != 0 and any(d.is_block for d in disks):
        raise AccessDenied("Replicating block devices needs root: run the installer with sudo")
    for disk in disks:
        console.say(f"Identified volume for replication: {disk.name} of size {_size_text(disk.size)}")
    console.say("All volumes for replication were successfully identified.")

    state = AgentState(os.path.abspath(args.state_dir))
    created_dir = not os.path.isdir(state.root)
    state.ensure()
    console.out.write(f"Downloading the {PRODUCT} onto the source server... ")
    agent_path = os.path.join(state.root, AGENT_FILE)
    fresh_agent = not os.path.exists(agent_path)
    try:
        _copy_agent(agent_path)
        console.say("Finished.")
        console.out.write(f"Installing the {PRODUCT} onto the source server... ")
        console.say("Finished.")
        console.out.write("Syncing the source server with the rehost console... ")
        console.out.flush()
        api = AgentApiClient(endpoint, region, creds, args.ca_bundle)
        reply = api.register_agent(
            identification_hints(args.user_provided_id),
            source_properties(disks),
            [d.as_device() for d in disks],
            tags=tags,
            no_replication=args.no_replication,
        )
    except BaseException:
        console.say("Failed.")
        # Leave nothing behind from this attempt on a machine that had no agent yet.
        if created_dir:
            shutil.rmtree(state.root, ignore_errors=True)
        elif fresh_agent and os.path.exists(agent_path):
            os.unlink(agent_path)
        raise
    console.say("Finished.")
    sid = str(reply["sourceServerID"])
    identity = {
        "sourceServerID": sid,
        "arn": reply.get("arn", ""),
        "endpoint": endpoint,
        "region": region,
        "caBundle": os.path.abspath(args.ca_bundle) if args.ca_bundle else None,
        "userProvidedID": args.user_provided_id,
        "disks": [AgentState.disk_doc(d) for d in disks],
        "agentPath": agent_path,
        "agentVersion": AGENT_VERSION,
    }
    # From now on the agent signs with a key of its own, for its own server only (older control planes
    # issue none: then it keeps the installer's).
    issued = reply.get("agentCredentials") or {}
    if issued.get("accessKeyId") and issued.get("secretAccessKey"):
        creds = Credentials(str(issued["accessKeyId"]), str(issued["secretAccessKey"]))
    state.save_credentials(creds)
    state.save_identity(identity)
    state.reset_for(sid)
    active, quota = int(reply.get("activeSourceServers", 1)), reply.get("quota", "")
    console.say(f"The following is the source server ID: {sid}.")
    console.say(
        f"You now have {active} active source server{'' if active == 1 else 's'} out of a total quota of {quota}."
    )
    return identity


def _copy_agent(dest: str) -> None:
    """Put the agent's code on the source: this very file when it is the one-file installer, else a
    freshly built bundle of the installed package."""
    me = sys.argv[0] if sys.argv else ""
    tmp = temp_name(dest)
    import zipfile

    if me and os.path.isfile(me) and zipfile.is_zipfile(me):
        shutil.copyfile(me, tmp)
    else:
        from rehost.agent.bundle import build_installer

        build_installer(tmp)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest)


def run_foreground(state_dir: str, ca_bundle: str | None = None) -> int:
    """Run the agent in this process until SIGTERM/SIGINT or DISCONNECT."""
    from rehost.agent.runner import Agent

    agent = Agent(state_dir, ca_bundle=ca_bundle)

    def _stop(signum: int, frame: object) -> None:
        agent.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    agent.run()
    return 0


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, inp: TextIO | None = None) -> int:
    """The installer's entry point; returns the exit code (0, or the error's exit code after one line)."""
    args = build_parser().parse_args(argv)
    console = Console(out or sys.stdout, inp or sys.stdin, prompt=not args.no_prompt)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        identity = install(args, console)
        if args.foreground:
            console.say(f"The {PRODUCT} was successfully installed.")
            return run_foreground(args.state_dir, args.ca_bundle)
        from rehost.agent.service import install_service

        install_service(os.path.abspath(args.state_dir), identity["agentPath"])
        console.say(f"The {PRODUCT} was successfully installed.")
        return 0
    except RehostError as exc:
        sys.stderr.write(f"{PROG}: error: {exc.message}\n")
        return exc.exit_code or 1
    except OSError as exc:
        # Not the user's typo but still not a traceback: e.g. no permission on the state directory.
        sys.stderr.write(f"{PROG}: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": ") + "\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
