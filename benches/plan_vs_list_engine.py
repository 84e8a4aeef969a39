"""A private dockerd with N small images, for benches/plan_vs_list.sh and
benches/memory.sh (issue 11, part 4).

The engine is started like tests/common/private_engine.rs starts one: its own
config file, data root, exec root, socket and pidfile, no bridge, no iptables,
fuse-overlayfs. Images are loaded with `POST /images/load` of a few big
tarballs: every image has one base layer shared by 50 images and one tiny
layer of its own (a CI host's shape: few bases, many small images), and a tag.

Used as a library (`engine = Engine.start(dir)`, `engine.load(n)`,
`engine.stop()`), and by the shell scripts through `python3 -m`-less imports.

`BENCH_ENGINE_DIR=dir` keeps the engine's directory (data root included) after a
bench and reuses it in the next one, so that 10,000 images are loaded once for
benches/memory.sh and benches/plan_vs_list.sh (`bench_dir`, `Engine.load_up_to`).
"""

import hashlib
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import tarfile
import time

# Images per `POST /images/load`: one tarball of this many images is a few
# MB and dockerd loads it in one request.
BATCH = 500
# Images sharing one base layer.
PER_BASE = 50


class UnixHTTP(http.client.HTTPConnection):
    """HTTP over a unix socket, with a timeout on every call."""

    def __init__(self, path, timeout=600):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def request(sock, method, path, body=None, ctype=None, timeout=600):
    conn = UnixHTTP(sock, timeout)
    headers = {"Content-Type": ctype} if ctype else {}
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def _layer(name, data):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        _add(t, name, data)
    return buf.getvalue()


def tarball(first, count, prefix, dangling=False, per_base=PER_BASE):
    """A `docker load` tarball of images first..first+count-1: tagged
    `bench/<prefix>-…`, or untagged (dangling) with `dangling`; each has a
    layer of its own on a base layer shared by `per_base` images (1: no
    layer shared)."""
    buf = io.BytesIO()
    manifest = []
    done_layers = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for i in range(first, first + count):
            base = _layer(f"base-{i // per_base}", f"base {i // per_base}\n".encode())
            own = _layer(f"own-{i}", f"image {i}\n".encode())
            names, diffs = [], []
            for layer in (base, own):
                h = hashlib.sha256(layer).hexdigest()
                name = f"{h}/layer.tar"
                if name not in done_layers:
                    _add(t, name, layer)
                    done_layers.add(name)
                names.append(name)
                diffs.append(f"sha256:{h}")
            created = "2026-01-01T00:00:00Z"
            config = json.dumps(
                {
                    "architecture": "amd64",
                    "os": "linux",
                    "created": created,
                    "config": {"Labels": {"imagegc.bench": prefix}},
                    "rootfs": {"type": "layers", "diff_ids": diffs},
                    "history": [
                        {"created": created, "created_by": "base"},
                        {"created": created, "created_by": f"image {i}"},
                    ],
                }
            ).encode()
            cid = hashlib.sha256(config).hexdigest()
            _add(t, f"{cid}.json", config)
            manifest.append(
                {
                    "Config": f"{cid}.json",
                    "RepoTags": [] if dangling else [f"bench/{prefix}-{i // 100}:{i}"],
                    "Layers": names,
                }
            )
        _add(t, "manifest.json", json.dumps(manifest).encode())
    return buf.getvalue()


def bench_dir(prefix):
    """(directory for the bench, whether to keep it): `BENCH_ENGINE_DIR` if set
    (kept, reused), else a fresh temp dir (removed after)."""
    kept = os.environ.get("BENCH_ENGINE_DIR")
    if kept:
        os.makedirs(kept, exist_ok=True)
        return kept, True
    import tempfile
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp"), False


class Engine:
    def __init__(self, base, proc):
        self.base = base
        self.proc = proc
        self.sock = os.path.join(base, "docker.sock")

    @classmethod
    def start(cls, base):
        os.makedirs(base, exist_ok=True)
        with open(os.path.join(base, "daemon.json"), "w") as f:
            f.write("{}\n")
        log = open(os.path.join(base, "dockerd.log"), "wb")
        proc = subprocess.Popen(
            [
                "dockerd",
                "--config-file", os.path.join(base, "daemon.json"),
                "--data-root", os.path.join(base, "root"),
                "--exec-root", os.path.join(base, "exec"),
                "--host", f"unix://{base}/docker.sock",
                "--pidfile", os.path.join(base, "docker.pid"),
                "--bridge=none", "--iptables=false", "--ip-masq=false",
                "--storage-driver=" + os.environ.get("BENCH_STORAGE_DRIVER", "vfs"),
            ],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )
        engine = cls(base, proc)
        deadline = time.time() + 60
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("dockerd exited: see " + base + "/dockerd.log")
            try:
                if request(engine.sock, "GET", "/_ping", timeout=2)[0] == 200:
                    return engine
            except OSError:
                pass
            time.sleep(0.2)
        engine.stop()
        raise RuntimeError("dockerd did not answer /_ping within 60 s")

    @property
    def host(self):
        return f"unix://{self.sock}"

    def load(self, n, prefix="img", dangling=False, per_base=PER_BASE):
        """Load n images (see `tarball`); returns the seconds it took."""
        t0 = time.monotonic()
        for first in range(0, n, BATCH):
            body = tarball(first, min(BATCH, n - first), prefix, dangling, per_base)
            status, data = request(
                self.sock, "POST", "/images/load?quiet=1", body, "application/x-tar"
            )
            if status != 200 or b'"error"' in data:
                raise RuntimeError(f"load: {status} {data[:300]!r}")
        return time.monotonic() - t0

    def load_up_to(self, n):
        """Load the bench's n images unless the engine holds that many already (a
        reused `BENCH_ENGINE_DIR`); returns the seconds it took, None if skipped."""
        if self.count() >= n:
            return None
        return self.load(n)

    def count(self):
        status, data = request(self.sock, "GET", "/images/json?all=1")
        return len(json.loads(data))

    def list_seconds(self):
        """The engine's own list calls, as a client pays them: a connection,
        `GET /images/json?all=1` and `GET /containers/json?all=1`."""
        t0 = time.monotonic()
        conn = UnixHTTP(self.sock)
        for path in ("/images/json?all=1", "/containers/json?all=1"):
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{path}: {resp.status}")
        conn.close()
        return time.monotonic() - t0

    def stop(self, remove=True):
        """Stop dockerd; remove its directory unless `remove` is false (a kept
        `BENCH_ENGINE_DIR`)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # fuse-overlayfs mounts dockerd may have left behind.
        with open("/proc/self/mounts") as f:
            mounts = [l.split()[1] for l in f if self.base in l]
        for m in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], check=False)
        if remove:
            subprocess.run(["rm", "-rf", self.base], check=False)
