"""Runs the images built by scripts/images.sh the way a container runtime would, without one: `podman run` does not
work on these machines (crun refuses the cgroup setup), so each image's filesystem is exported (`podman create` +
`podman export`) and its own ENTRYPOINT runs with its own ENV and USER under chroot, in a network namespace of its own
joined to the host by a veth pair (a private /30 in 10.200.0.0/16). Tests reach it from the host side, as a CI job
reaches a service container. Needs root (ip netns, chroot) and podman."""

import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest

MOCK_IMAGE = os.environ.get("MOCK_IMAGE", "localhost/mock-chart-img:dev")
RECORDER_IMAGE = os.environ.get("RECORDER_IMAGE", "localhost/recorder-proxy:dev")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_netns_numbers = itertools.count()


def run(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


class Image:
    """An image's metadata (`podman image inspect`) and its exported filesystem."""

    def __init__(self, ref, workdir):
        self.ref = ref
        self.meta = json.loads(run("podman", "image", "inspect", ref).stdout)[0]
        config = self.meta["Config"]
        self.entrypoint = (config.get("Entrypoint") or []) + (config.get("Cmd") or [])
        self.env = dict(e.split("=", 1) for e in config.get("Env") or [])
        self.user = config.get("User") or ""
        self.exposed = sorted(int(p.split("/")[0]) for p in (config.get("ExposedPorts") or {}))
        self.healthcheck = (self.meta.get("Healthcheck") or config.get("Healthcheck") or {}).get("Test") or []
        self.size = self.meta["Size"]
        self.rootfs = os.path.join(workdir, ref.rsplit("/", 1)[-1].replace(":", "_"))
        os.makedirs(self.rootfs)
        # The image's root is the chroot's "/": the non-root user must be able to enter it.
        os.chmod(self.rootfs, 0o755)
        cid = run("podman", "create", ref).stdout.strip()
        try:
            export = subprocess.Popen(["podman", "export", cid], stdout=subprocess.PIPE)
            # Run as root, tar keeps the owners: /data, /cassettes and /tmp stay the non-root user's.
            subprocess.run(["tar", "-x", "-C", self.rootfs], stdin=export.stdout, check=True)
            assert export.wait() == 0, "podman export failed"
        finally:
            run("podman", "rm", cid)

    def port(self):
        """The port the image listens on: its PORT, which it EXPOSEs."""
        return int(self.env["PORT"])

    def command(self, netns, argv, env):
        """`argv` inside the image: its ENV (then `env`), its USER, its filesystem, in `netns`."""
        assert self.user, f"{self.ref} has no USER"
        variables = {**self.env, **env}
        return [
            "ip", "netns", "exec", netns.name,
            "env", "-i", *[f"{k}={v}" for k, v in variables.items()],
            "/usr/sbin/chroot", f"--userspec={self.user}", self.rootfs, *argv,
        ]  # fmt: skip

    def output(self, argv):
        """Runs `argv` in the image's filesystem as its user (no network needed); its stdout."""
        cmd = ["env", "-i", *[f"{k}={v}" for k, v in self.env.items()], "/usr/sbin/chroot",
               f"--userspec={self.user}", self.rootfs, *argv]
        return run(*cmd).stdout

    def variables(self, *help_argv):
        """Every environment variable the image's binary reads, from its own --help (`[env: X=]`, and the
        variables its texts name; not the flags' value names): what a recipe may set."""
        import re
        text = self.output([self.entrypoint[0], *help_argv, "--help"])
        return set(re.findall(r"\b(PORT|(?:MOCK_CHART_IMG|RECORDER|CHART_IMG)_[A-Z0-9_]*[A-Z0-9])\b", text)) | set(self.env)

    def mount_points(self, containerfile):
        """The mount points the Containerfile documents (`#   /path  …` under "Mount point(s)")."""
        import re
        text = open(containerfile).read()
        return set(re.findall(r"^#\s+(/[a-z]+)\b", text, re.M)) | set(re.findall(r"Mount point: (/[a-z]+)", text))

    def start(self, netns, env=None, args=()):
        return Process(self.command(netns, self.entrypoint + list(args), env or {}))

    def run_healthcheck(self, netns, env=None):
        """Runs the image's HEALTHCHECK command (CMD form) as the runtime would; its exit status."""
        assert self.healthcheck[:1] == ["CMD"], self.healthcheck
        p = subprocess.run(self.command(netns, self.healthcheck[1:], env or {}), capture_output=True, text=True,
                           timeout=30)
        return p.returncode, p.stderr


class Process:
    """A started image; waits for its `"message":"ready"` line."""

    def __init__(self, cmd):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines = []
        self._ready = threading.Event()
        self.ready = None
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(20):
            self.stop()
            raise AssertionError(f"no ready line within 20 s: {self.lines}")

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("message") == "ready":
                self.ready = entry
                self._ready.set()

    def stop(self):
        """SIGTERM, as a runtime stops a container; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Netns:
    """A network namespace joined to the host by a veth pair; the host is .1, the namespace .2 of a /30."""

    def __init__(self):
        n = next(_netns_numbers)
        tag = f"{os.getpid() % 10000}x{n}"
        self.name = f"mockimg-{tag}"
        self.host_if = f"mih{tag}"
        subnet = (os.getpid() * 7 + n) % 16000
        prefix = f"10.200.{subnet // 64}.{(subnet % 64) * 4}"
        base = prefix.rsplit(".", 1)
        self.host_ip = f"{base[0]}.{int(base[1]) + 1}"
        self.ip = f"{base[0]}.{int(base[1]) + 2}"
        run("ip", "netns", "add", self.name)
        try:
            run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", "eth0", "netns", self.name)
            run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            run("ip", "link", "set", self.host_if, "up")
            for cmd in (["ip", "addr", "add", f"{self.ip}/30", "dev", "eth0"], ["ip", "link", "set", "eth0", "up"],
                        ["ip", "link", "set", "lo", "up"]):
                run("ip", "netns", "exec", self.name, *cmd)
        except Exception:
            self.close()
            raise

    def close(self):
        # Deleting the namespace deletes its end of the pair, and with it the host's end.
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)


@pytest.fixture(scope="session")
def workdir():
    d = tempfile.mkdtemp(prefix="image-check-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def mock_image(workdir):
    return Image(MOCK_IMAGE, workdir)


@pytest.fixture(scope="session")
def recorder_image(workdir):
    return Image(RECORDER_IMAGE, workdir)


@pytest.fixture
def netns():
    ns = Netns()
    yield ns
    ns.close()


@pytest.fixture(scope="session", autouse=True)
def needs_root():
    if os.geteuid() != 0:
        pytest.exit("the image check needs root (ip netns, chroot)", returncode=2)
    for tool in ("podman", "ip", "tar", "/usr/sbin/chroot"):
        if not shutil.which(tool):
            pytest.exit(f"the image check needs {tool}", returncode=2)
