"""The hands-on migration (shared/docs/hands-on.md), end to end, for real.

A real Debian web server boots as the source VM on IDE/e1000 hardware; a real `rehost server` runs the
control plane; the agent is downloaded and installed over ssh exactly as the seed does it; the test and
cutover instances are real QEMU VMs booted from converted snapshots; every check is an HTTP GET of the
site. `run` prints each step with its elapsed time and returns the list of failed checks (empty = passed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rehost.console.present import duration_seconds
from rehost.errors import RehostError
from rehost.images.builder import SITE_MARKER

GUEST_HOST_IP = "10.0.2.100"  # where the source VM reaches the host's loopback services (guestfwd)


class DemoFailed(RehostError):
    """The demo's migration did not complete."""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Step:
    name: str
    seconds: float
    ok: bool
    detail: str = ""


@dataclass
class Demo:
    work_dir: Path
    flavor: str = "web"
    size_gib: float = 2.0
    # Debootstrap trees, shared between runs and with the tests (default: `images.builder.default_cache_dir`).
    cache_dir: Path | None = None
    # Called after each instance's site was checked, with (demo, "test" | "cutover", instance ID, URL):
    # lets a test look at the same moment through another door (the web console).
    after_launch: Callable[[Demo, str, str, str], None] | None = None
    out: Callable[[str], None] = print
    steps: list[Step] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    _cleanups: list[Callable[[], None]] = field(default_factory=list)

    # -- reporting ----------------------------------------------------------------------------------------

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        self.out(f"[{t0 - self.started:7.1f}s] {name} ...")
        try:
            yield
        except Exception as exc:
            dt = time.monotonic() - t0
            self.steps.append(Step(name, dt, False, str(exc)))
            self.failures.append(f"{name}: {exc}")
            self.out(f"[{time.monotonic() - self.started:7.1f}s]   FAILED after {dt:.1f}s: {exc}")
            raise
        dt = time.monotonic() - t0
        self.steps.append(Step(name, dt, True))
        self.out(f"[{time.monotonic() - self.started:7.1f}s]   done in {dt:.1f}s")

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            raise DemoFailed(what)
        self.out(f"            check passed: {what}")

    # -- pieces -------------------------------------------------------------------------------------------

    def _cli(self, *args: str) -> dict[str, Any]:
        proc = subprocess.run([sys.executable, "-m", "rehost.cli.main", *args, "--data-dir", str(self.data_dir)],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise DemoFailed(f"rehost {' '.join(args)}: {proc.stderr.strip()}")
        return json.loads(proc.stdout) if proc.stdout.strip() else {}

    def _client(self, service: str, key: tuple[str, str]) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(service, endpoint_url=f"http://127.0.0.1:{self.cp_port}", region_name="us-east-1",
                            aws_access_key_id=key[0], aws_secret_access_key=key[1],
                            config=Config(retries={"max_attempts": 3}, read_timeout=300))

    def _ssh(self, command: str, timeout: float = 600) -> str:
        proc = subprocess.run(
            ["ssh", "-i", str(self.ssh_key), "-p", str(self.vm.ssh_port), "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
             "-o", "BatchMode=yes", "root@127.0.0.1", command],
            capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise DemoFailed(f"ssh {command!r} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
        return proc.stdout

    def _wait(self, what: str, predicate: Callable[[], Any], timeout: float, interval: float = 2.0) -> Any:
        deadline = time.monotonic() + timeout
        last_error = ""
        while time.monotonic() < deadline:
            try:
                value = predicate()
                if value:
                    return value
            except (OSError, DemoFailed) as exc:
                last_error = str(exc)
            time.sleep(interval)
        raise DemoFailed(f"timed out after {timeout:.0f}s waiting for {what}" + (f" ({last_error})" if last_error else ""))

    @staticmethod
    def _get(url: str) -> str:
        # PHP pages under TCG can take seconds, the first after boot longer.
        with urllib.request.urlopen(url, timeout=60) as resp:
            return resp.read().decode(errors="replace")

    # -- the flow -----------------------------------------------------------------------------------------

    def run(self) -> list[str]:
        try:
            self._run()
        except Exception as exc:  # every failure is reported as a failed step, then cleaned up
            if not self.failures:
                self.failures.append(str(exc))
        finally:
            for cleanup in reversed(self._cleanups):
                try:
                    cleanup()
                except Exception as exc:  # cleanup must not hide the result
                    self.out(f"cleanup: {exc}")
        total = time.monotonic() - self.started
        self.out("")
        width = max([len(s.name) for s in self.steps] + [4])
        self.out(f"{'step':{width}} {'seconds':>8}  result")
        for s in self.steps:
            self.out(f"{s.name:{width}} {s.seconds:8.1f}  {'ok' if s.ok else 'FAILED'}")
        self.out(f"{'total':{width}} {total:8.1f}  {'PASSED' if not self.failures else 'FAILED'}")
        return self.failures

    def _run(self) -> None:
        from rehost.images.builder import build_source_image, default_cache_dir
        from rehost.images.sourcevm import boot_source_vm

        self.work_dir.mkdir(parents=True, exist_ok=True)
        run_dir = self.work_dir / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir.mkdir()
        self.data_dir = run_dir / "data"
        cache = self.cache_dir or default_cache_dir()
        cache.mkdir(parents=True, exist_ok=True)

        with self.step("Prepare an ssh key for the source server"):
            self.ssh_key = run_dir / "id_ed25519"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.ssh_key)], check=True)

        image = run_dir / "source.img"
        with self.step(f"Step 3: build the source server image ({self.flavor}, Debian, cached tree)"):
            build_source_image(cache, image, size_gib=self.size_gib, flavor=self.flavor,  # type: ignore[arg-type]
                               authorized_keys=self.ssh_key.with_suffix(".pub").read_text())

        self.cp_port = _free_port()
        self.rs_port = _free_port()
        with self.step("Start the rehost control plane"):
            log = open(run_dir / "server.log", "ab")
            server = subprocess.Popen(
                [sys.executable, "-m", "rehost.cli.main", "server", "--data-dir", str(self.data_dir),
                 "--port", str(self.cp_port), "--replication-port", str(self.rs_port),
                 "--advertise-replication-host", GUEST_HOST_IP],
                stdout=log, stderr=log)
            def stop_server() -> None:
                server.terminate()
                server.wait(30)

            self._cleanups.append(stop_server)
            self._wait("the control plane", lambda: self._get(f"http://127.0.0.1:{self.cp_port}/healthz"), 60, 0.2)

        with self.step("Step 3: boot the source server (IDE disk, e1000 NIC) and open its site"):
            self.vm = boot_source_vm(image, run_dir / "source-vm", memory_mib=768,
                                     host_services={self.cp_port: self.cp_port, self.rs_port: self.rs_port})
            self._cleanups.append(self.vm.stop)
            page = self._wait("the source's site", lambda: self._get(self.vm.url), 300)
            if self.flavor == "wordpress":
                self.check(SITE_MARKER in page and 'content="WordPress' in page,
                           f"the source server serves its WordPress site ({SITE_MARKER!r})")
            else:
                self.check(SITE_MARKER in page, "the source server serves its site")
            self.source_page = page

        with self.step("Step 1: create MGNuser with AWSApplicationMigrationAgentPolicy and an access key"):
            self._cli("iam", "create-user", "MGNuser")
            self._cli("iam", "attach-user-policy", "MGNuser", "AWSApplicationMigrationAgentPolicy")
            key = self._cli("iam", "create-access-key", "MGNuser")["AccessKey"]
            self.agent_key = (key["AccessKeyId"], key["SecretAccessKey"])
            admin = self._cli("iam", "create-access-key", "admin")["AccessKey"]
            self.admin_key = (admin["AccessKeyId"], admin["SecretAccessKey"])
            self.mgn = self._client("mgn", self.admin_key)
            self.ec2 = self._client("ec2", self.admin_key)

        with self.step("Step 2: set up the service (InitializeService)"):
            self.mgn.initialize_service()
            template = self.mgn.describe_replication_configuration_templates()["items"][0]
            self.check(template["replicationServerInstanceType"] == "t3.small" and template["defaultLargeStagingDiskType"] == "GP3",
                       "the default replication template uses t3.small and GP3")

        with self.step("Step 4: over ssh, download the installer from the control plane and run it"):
            endpoint = f"http://{GUEST_HOST_IP}:{self.cp_port}"
            self._ssh(f"wget -q -O rehost-replication-installer-init {endpoint}/installer/linux/rehost-replication-installer-init"
                      " && chmod +x rehost-replication-installer-init")
            out = self._ssh(f"./rehost-replication-installer-init --region us-east-1 --aws-access-key-id {self.agent_key[0]}"
                            f" --aws-secret-access-key {self.agent_key[1]} --endpoint {endpoint} --no-prompt", timeout=900)
            self.out("            " + "\n            ".join(out.strip().splitlines()))
            ids_ = [w.rstrip(".") for w in out.split() if w.startswith("s-")]
            self.check(bool(ids_), "the installer printed the source server ID")
            self.server_id = ids_[-1]

        with self.step("Wait for READY_FOR_TEST (initial sync, first snapshot) while the site keeps writing"):
            def ready() -> bool:
                s = self.mgn.describe_source_servers(filters={"sourceServerIDs": [self.server_id]})["items"][0]
                info = s.get("dataReplicationInfo", {})
                disks = info.get("replicatedDisks", [])
                done = sum(d.get("replicatedStorageBytes", 0) for d in disks)
                total = sum(d.get("totalStorageBytes", 0) for d in disks) or 1
                self.out(f"            {s['lifeCycle']['state']:<15} {info.get('dataReplicationState', '-'):<13} "
                         f"{100 * done / total:5.1f}% lag={info.get('lagDuration', '-')}")
                return s["lifeCycle"]["state"] == "READY_FOR_TEST"
            self._wait("READY_FOR_TEST", ready, 1800, 10)

        if self.flavor == "wordpress":
            self._publish_post()
        else:
            with self.step("Write new content on the source while replication runs"):
                self.marker = f"written-after-initial-sync-{int(time.time())}"
                self._ssh(f"echo '<p>{self.marker}</p>' >> /var/www/html/index.html && sync")
                self.check(self.marker in self._get(self.vm.url),
                           "the source serves content written after the initial sync")

        with self.step("Wait for replication to catch up (continuous, lag under 30 s)"):
            self._wait("replication to catch up", self._caught_up, 600, 5)

        with self.step("Step 5: turn right-sizing off and make a t3.micro launch template version the default"):
            self.mgn.update_launch_configuration(sourceServerID=self.server_id, targetInstanceTypeRightSizingMethod="NONE")
            config = self.mgn.get_launch_configuration(sourceServerID=self.server_id)
            lt_id = config["ec2LaunchTemplateID"]
            version = self.ec2.create_launch_template_version(
                LaunchTemplateId=lt_id, SourceVersion="$Default",
                LaunchTemplateData={"InstanceType": "t3.micro",
                                    "NetworkInterfaces": [{"DeviceIndex": 0, "AssociatePublicIpAddress": True}]},
            )["LaunchTemplateVersion"]["VersionNumber"]
            self.ec2.modify_launch_template(LaunchTemplateId=lt_id, DefaultVersion=str(version))
            default = self.ec2.describe_launch_template_versions(LaunchTemplateId=lt_id, Versions=["$Default"])
            data = default["LaunchTemplateVersions"][0]["LaunchTemplateData"]
            self.check(data.get("InstanceType") == "t3.micro", f"template {lt_id} now defaults to t3.micro")

        self._launch("test", self.mgn.start_test, "TESTING")

        with self.step("Step 6: mark ready for cutover (the test instance is terminated)"):
            s = self.mgn.change_server_life_cycle_state(sourceServerID=self.server_id, lifeCycle={"state": "READY_FOR_CUTOVER"})
            self.check(s["lifeCycle"]["state"] == "READY_FOR_CUTOVER", "lifecycle reads READY_FOR_CUTOVER")
            self._wait("the test instance's termination", self._no_job_running, 300, 2)
            state = self.ec2.describe_instances(InstanceIds=[self.test_instance])["Reservations"][0]["Instances"][0]["State"]
            self.check(state["Name"] == "terminated", f"the test instance {self.test_instance} is terminated")

        self._launch("cutover", self.mgn.start_cutover, "CUTTING_OVER")

        with self.step("Step 7: finalize the cutover and archive the server"):
            s = self.mgn.finalize_cutover(sourceServerID=self.server_id)
            self.check(s["lifeCycle"]["state"] == "CUTOVER", "lifecycle reads CUTOVER")
            self.check(s["dataReplicationInfo"]["dataReplicationState"] == "DISCONNECTED", "data replication is DISCONNECTED")
            s = self.mgn.mark_as_archived(sourceServerID=self.server_id)
            self.check(s["isArchived"] is True, "the server is archived")

    def _publish_post(self) -> None:
        """Publish a post through WordPress itself on the running source: it lives only in MariaDB."""
        from rehost.images.wordpress import ADMIN_PASSWORD_FILE, publish_post

        with self.step("Publish a WordPress post on the source (XML-RPC wp.newPost) while replication runs"):
            password = self._ssh(f"cat {ADMIN_PASSWORD_FILE}").strip()
            self.marker = f"Published while replicating {time.strftime('%H:%M:%S')}"
            self.post_id = publish_post(self.vm.url, password, self.marker,
                                        "Written to MariaDB on the source after the initial sync.")
            self.out(f"            post {self.post_id}: {self.marker!r}")
            self.check(self.marker in self._get(f"{self.vm.url}?p={self.post_id}"),
                       f"the source serves post {self.post_id} at /?p={self.post_id}")
            self.check(self.marker in self._get(self.vm.url), "the source's front page lists the new post")

    def _caught_up(self) -> bool:
        s = self.mgn.describe_source_servers(filters={"sourceServerIDs": [self.server_id]})["items"][0]
        info = s.get("dataReplicationInfo", {})
        backlog = sum(d.get("backloggedStorageBytes", 0) for d in info.get("replicatedDisks", []))
        lag = duration_seconds(info.get("lagDuration"))
        self.out(f"            {info.get('dataReplicationState', '-'):<13} lag={info.get('lagDuration', '-')} "
                 f"backlog={backlog} B")
        # The site keeps writing, so some backlog is always in flight; the launch's own snapshot syncs it.
        return info.get("dataReplicationState") == "CONTINUOUS" and lag is not None and lag < 30

    def _terminate(self, instance_id: str) -> None:
        """Terminate a launched instance unless it already is (the test instance is, by Step 6)."""
        def state() -> str:
            found = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
            return str(found["State"]["Name"])

        if state() == "terminated":
            return
        self.ec2.terminate_instances(InstanceIds=[instance_id])
        self._wait(f"{instance_id} to terminate", lambda: state() == "terminated", 120, 1)
        self.out(f"cleanup: terminated {instance_id}")

    def _no_job_running(self) -> bool:
        jobs = self.mgn.describe_jobs()["items"]
        return not any(j["status"] != "COMPLETED" and any(p["sourceServerID"] == self.server_id
                                                          for p in j["participatingServers"]) for j in jobs)

    def _launch(self, kind: str, start: Callable[..., Any], state: str) -> None:
        step = "6" if kind == "test" else "7"
        with self.step(f"Step {step}: launch the {kind} instance and wait for the job"):
            job = start(sourceServerIDs=[self.server_id])["job"]
            s = self.mgn.describe_source_servers(filters={"sourceServerIDs": [self.server_id]})["items"][0]
            self.check(s["lifeCycle"]["state"] == state, f"lifecycle reads {state}")
            done = self._wait("the launch job", lambda: (lambda j: j if j["status"] == "COMPLETED" else None)(
                self.mgn.describe_jobs(filters={"jobIDs": [job["jobID"]]})["items"][0]), 1800, 5)
            for item in self.mgn.describe_job_log_items(jobID=job["jobID"])["items"]:
                data = item.get("eventData", {})
                extra = f" {data.get('rawError', '')}" if data.get("rawError") else ""
                self.out(f"            {item['logDateTime']} {item['event']}{extra}")
            server = done["participatingServers"][0]
            self.check(server["launchStatus"] == "LAUNCHED", f"the {kind} instance launched")
            instance_id = server["launchedEc2InstanceID"]
            # The control plane stops at the end of the demo: an instance it launched must not outlive it.
            self._cleanups.append(lambda: self._terminate(instance_id))
            if kind == "test":
                self.test_instance = instance_id
        with self.step(f"Step {step}: open the site on the {kind} instance's public address"):
            reservation = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
            address = reservation.get("PublicIpAddress", "127.0.0.1")
            url = _public_url(reservation, address)
            self.out(f"            {instance_id} is at {url}")
            page = self._wait(f"the {kind} instance's site", lambda: self._get(url), 600, 5)
            if self.flavor == "wordpress":
                self.check(SITE_MARKER in page and self.marker in page,
                           f"the {kind} instance's WordPress front page lists the post {self.marker!r}")
                post = self._get(f"{url}?p={self.post_id}")
                self.check(self.marker in post, f"the {kind} instance serves post {self.post_id} (/?p={self.post_id}) "
                                                "from its MariaDB database")
            else:
                self.check(self.marker in page, f"the {kind} instance serves the source's content, including what "
                                                "was written after the initial sync")
            if self.after_launch is not None:
                self.after_launch(self, kind, instance_id, url)


def _public_url(instance: dict[str, Any], address: str) -> str:
    """The instance's site: its public address and the loopback port its port 80 is forwarded to."""
    for tag in instance.get("Tags", []):
        if tag["Key"] == "rehost:port-forward:80":  # value "127.0.0.1:<host port>"
            return f"http://{address}:{tag['Value'].rsplit(':', 1)[1]}/"
    raise DemoFailed(f"instance {instance.get('InstanceId')} has no forwarded port 80")


def main(work_dir: Path, flavor: str = "web", cache_dir: Path | None = None) -> int:
    if os.geteuid() != 0:
        raise DemoFailed("the demo builds disk images with loop devices: run it as root")
    for tool in ("qemu-system-x86_64", "ssh", "debootstrap"):
        if shutil.which(tool) is None:
            raise DemoFailed(f"{tool} is not installed: run `make deps` first")
    failures = Demo(work_dir=work_dir, flavor=flavor, cache_dir=cache_dir).run()
    return 0 if not failures else 1
