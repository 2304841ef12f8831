"""The main job: a whole local inference mesh on 127.0.0.1.

Starts a DHT bootstrap node, a model manager, the HTTP gateway on :3000 and two
inference workers, uploads the demo models (built by scripts/make_models.py)
to the manager with a progress bar, waits until the gateway sees a worker for
each model, prints example calls and the dashboard address, and stops
everything cleanly on Ctrl-C (SIGTERM to each process, newest first).

Run it through `scripts/demo`, which sets up the virtual environment first.
State lives in var/demo/ (removed with --fresh).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
PY = sys.executable
DEMO_MODELS = ("digits", "mlp-tiny", "mlp-mid", "conv-small")
BOOTSTRAP_PORT = 49737
KSERVE_EXAMPLE = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}


class Mesh:
    """The processes of the demo, stopped newest first."""

    def __init__(self, state: pathlib.Path, env: dict[str, str]):
        self.state = state
        self.env = env
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], ready: str | None = "ready", timeout: float = 60.0) -> dict:
        """Start `argv` (a `--json` node); wait for its `ready`-event line; returns that event."""
        log = open(self.state / f"{name}.log", "wb")
        proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=log,
                                start_new_session=True)
        self.procs.append((name, proc))
        if ready is None:
            return {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise SystemExit(f"{name} exited early (status {proc.wait()}); see {log.name}")
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "error":
                raise SystemExit(f"{name}: {event.get('message')}")
            if event.get("event") == ready:
                _drain(proc)
                return event
        raise SystemExit(f"{name} did not report {ready!r} within {timeout:.0f} s; see {log.name}")

    def stop(self) -> None:
        """SIGTERM each process, newest first, waiting for each: the gateway goes
        before the workers it calls, and the DHT nodes stay up while the workers
        unannounce their topics."""
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                print(f"  {name} did not stop in 15 s: killing it", flush=True)
                proc.kill()
                proc.wait()
        self.procs.clear()


def _drain(proc: subprocess.Popen) -> None:
    """Keep reading a child's stdout in the background so it never blocks on a full pipe."""
    import threading

    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()


def http(method: str, url: str, key: str | None = None, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, object]:
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def wait_for(what: str, check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.25)  # polling a separate process's HTTP API: there is no event to wait on
    raise SystemExit(f"timed out waiting for {what}")


def api_key(state: pathlib.Path, env: dict[str, str]) -> tuple[str, bool]:
    """MESH_API_KEY if set, else a new all-scope key in the demo's key database."""
    if env.get("MESH_API_KEY"):
        return env["MESH_API_KEY"], False
    keys_db = str(state / "keys.sqlite3")
    out = subprocess.run([PY, "-m", "gateway", "keys", "--keys-db", keys_db, "create", "--name", "demo",
                          "--scopes", "infer,models:read,models:write,admin"],
                         cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout.strip()
    return out.splitlines()[-1].strip(), True


def digit_example() -> list[float]:
    """One real 8x8 digit from scikit-learn's bundled data set (no download)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return [float(v) for v in d.data[-1]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=3000, help="gateway HTTP port (default 3000)")
    ap.add_argument("--bootstrap-port", type=int, default=BOOTSTRAP_PORT,
                    help=f"UDP port of the DHT bootstrap node (default {BOOTSTRAP_PORT})")
    ap.add_argument("--no-ops", action="store_true", help="no operator HTTP ports (/health, /metrics) on the workers")
    ap.add_argument("--state", default=str(ROOT / "var" / "demo"), help="state folder (default var/demo)")
    ap.add_argument("--fresh", action="store_true", help="remove the state folder first")
    ap.add_argument("--exit-after-start", action="store_true",
                    help="stop everything once the mesh is up and checked (for tests)")
    args = ap.parse_args()

    state = pathlib.Path(args.state).resolve()
    if args.fresh and state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    bootstrap = f"127.0.0.1:{args.bootstrap_port}"
    ops = (lambda port: "0") if args.no_ops else str
    models_dir = state / "models"

    print("building the demo models (scripts/make_models.py) ...", flush=True)
    subprocess.run([PY, "scripts/make_models.py", "--out", str(models_dir)], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    key, created = api_key(state, env)
    env["MESH_API_KEY"] = key

    mesh = Mesh(state, env)
    node = [PY, "-m", "mesh.node", "--json", "--bootstrap", bootstrap]
    try:
        mesh.start("bootstrap", [PY, "-m", "mesh.node", "--json", "--bootstrap-node", "--port", str(args.bootstrap_port)])
        print(f"  bootstrap node      udp {bootstrap}", flush=True)
        mesh.start("model-manager", node + ["--topic", "model-manager", "--data-dir", str(state / "model-manager"),
                                            "--ops-port", ops(8002)], ready="announced")
        print("  model manager       ops http://127.0.0.1:8002/metrics", flush=True)
        for model in DEMO_MODELS:
            print(f"uploading {model} to the model manager ...", flush=True)
            subprocess.run([PY, "-m", "workers.models.upload", str(models_dir / f"{model}-1.onnx"), "--id", model,
                            "--version", "1", "--bootstrap", bootstrap], cwd=ROOT, env=env, check=True)
        serve = ",".join(DEMO_MODELS)
        for i, ops_port in enumerate((8001, 8011)):
            # The workers have no local model files: they fetch them from the manager, peer to peer.
            mesh.start(f"worker-{i + 1}", node + ["--topic", "inference", "--serve", serve, "--ops-port", ops(ops_port),
                                                  "--model-dir", str(state / "no-local-models"),
                                                  "--fetch-dir", str(state / f"worker-{i + 1}-cache")],
                       ready="announced", timeout=120)
            print(f"  inference worker {i + 1}  ops http://127.0.0.1:{ops(ops_port)}/metrics", flush=True)
        mesh.start("gateway", [PY, "-m", "gateway", "--port", str(args.port), "--bootstrap", bootstrap,
                               "--keys-db", str(state / "keys.sqlite3")]
                   + [a for m in DEMO_MODELS for a in ("--model", m)], ready=None)
        base = f"http://127.0.0.1:{args.port}"
        wait_for("the gateway", lambda: http("GET", f"{base}/health")[0] == 200, 30)
        wait_for("two workers for each demo model", lambda: _workers_ready(base, key), 60)
        status, reply = http("POST", f"{base}/api/v1/inference/digits", key,
                             json.dumps({"inputs": {"x": {"shape": [1, 64], "dtype": "float32",
                                                          "data": digit_example()}}}).encode(),
                             {"Content-Type": "application/json"})
        if status != 200:
            raise SystemExit(f"demo inference failed: {status} {reply}")
        label = reply["outputs"]["label"]["data"][0]
        status, reply = http("POST", f"{base}/v2/models/mlp-tiny/infer", key, json.dumps(KSERVE_EXAMPLE).encode(),
                             {"Content-Type": "application/json"})
        if status != 200:
            raise SystemExit(f"demo KServe v2 inference failed: {status} {reply}")
        print_usage(base, key, created, label)
        if args.exit_after_start:
            return 0
        while True:
            signal.pause()
    except KeyboardInterrupt:
        return 0
    finally:
        print("\nstopping the mesh ...", flush=True)
        mesh.stop()
        print("stopped.", flush=True)


def _workers_ready(base: str, key: str) -> bool:
    status, body = http("GET", f"{base}/api/v1/status", key)
    if status != 200:
        return False
    workers = {t["name"]: t["workers"] for t in body.get("topics", [])}
    return all(len(workers.get(m, [])) >= 2 for m in DEMO_MODELS)


def print_usage(base: str, key: str, created: bool, label: int) -> None:
    digit = json.dumps({"inputs": {"x": {"shape": [1, 64], "dtype": "float32", "data": digit_example()}}})
    kserve = json.dumps(KSERVE_EXAMPLE)
    print(f"""
The mesh is up: a bootstrap node, a model manager, two inference workers and the gateway.
API key{' (new: keep it to reuse it)' if created else ''}:

  export MESH_API_KEY={key}

  Dashboard:  {base}/   (paste the API key when asked)

  curl {base}/health
  curl -H "Authorization: Bearer $MESH_API_KEY" {base}/api/v1/status
  curl -H "Authorization: Bearer $MESH_API_KEY" {base}/api/v1/models
  curl -H "Authorization: Bearer $MESH_API_KEY" -H "Content-Type: application/json" \\
       -d '{digit}' \\
       {base}/api/v1/inference/digits            # a real handwritten digit: the model says {label}
  curl -H "Authorization: Bearer $MESH_API_KEY" -H "Content-Type: application/json" \\
       -d '{kserve}' \\
       {base}/v2/models/mlp-tiny/infer           # KServe v2 / Open Inference Protocol
  curl -H "Authorization: Bearer $MESH_API_KEY" {base}/metrics

Press Ctrl-C to stop everything.""", flush=True)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the mesh as cleanly as Ctrl-C
    sys.exit(main())
