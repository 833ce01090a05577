"""Start `mlflow server` once, in the background, tracked by a pid file (the head of cluster.yaml).

    python -m raysweep.deploy.tracking_server --pid-file F --log-file L \
        [--backend-store-uri-file U] -- <mlflow server options>

A `pgrep -f "mlflow server"` guard cannot work under Ray's launcher: every command runs inside
`docker exec … bash --login -c -i "…"`, whose own command line holds the words it looks for, so
the guard always finds "a server" and none starts. Here the pid file names the one server this
script started; if that process is alive and is an MLflow server, nothing is done, otherwise a
new one is started, and the script returns once it answers on /health (exit 1 with the end of
its log when it does not).

A backend store URI with a password (`postgresql://user:secret@db/mlflow`) belongs in a file
that only its owner reads, named by `--backend-store-uri-file`: it reaches `mlflow server`
through its environment (MLFLOW_BACKEND_STORE_URI), never a command line, which every user of
the host sees in `ps` and which `ray up` prints and copies to ~/ray_bootstrap_config.yaml.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

READY_SECONDS = 120


def running(pid_file: Path) -> int | None:
    """The pid in `pid_file` if that process is alive and is an MLflow server."""
    try:
        pid = int(pid_file.read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if b"mlflow" in b" ".join(command) and b"server" in command else None


def option(args: list[str], name: str, default: str) -> str:
    return args[args.index(name) + 1] if name in args else default


def wait_ready(url: str, process: subprocess.Popen | None) -> bool:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            time.sleep(1)
    return False


def read_secret(path: Path) -> str | None:
    """The URI in `path`, or None (after one line on stderr) when the file is missing, empty,
    or readable by other users."""
    try:
        mode = path.expanduser().stat().st_mode
        uri = path.expanduser().read_text().strip()
    except OSError as error:
        print(f"--backend-store-uri-file {path}: {error.strerror or error}; write the store's "
              f"URI into it (chmod 600)", file=sys.stderr)
        return None
    if mode & 0o077:
        print(f"--backend-store-uri-file {path}: readable by other users (mode "
              f"{mode & 0o777:o}); chmod 600 {path}", file=sys.stderr)
        return None
    if not uri:
        print(f"--backend-store-uri-file {path}: empty; write the store's URI into it",
              file=sys.stderr)
        return None
    return uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raysweep.deploy.tracking_server",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--pid-file", type=Path, required=True)
    parser.add_argument("--log-file", type=Path, required=True)
    parser.add_argument("--backend-store-uri-file", type=Path,
                        help="a file (mode 600) holding the backend store URI, for one with a "
                             "password; instead of mlflow's --backend-store-uri")
    parser.add_argument("server_args", nargs=argparse.REMAINDER,
                        help="options for `mlflow server`, after --")
    args = parser.parse_args(argv)
    server_args = [a for a in args.server_args if a != "--"]
    url = f"http://{option(server_args, '--host', '127.0.0.1')}:{option(server_args, '--port', '5000')}"

    environment = dict(os.environ)
    if args.backend_store_uri_file:
        uri = read_secret(args.backend_store_uri_file)
        if uri is None:
            return 2
        environment["MLFLOW_BACKEND_STORE_URI"] = uri
    pid = running(args.pid_file)
    if pid is not None:
        print(f"mlflow server already running (pid {pid}) at {url}", flush=True)
        return 0
    for path in (args.pid_file, args.log_file):
        path.parent.mkdir(parents=True, exist_ok=True)
    with open(args.log_file, "ab") as log:
        # Its own session: the server outlives this script and the launcher's shell.
        process = subprocess.Popen([sys.executable, "-m", "mlflow", "server", *server_args],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                   env=environment, start_new_session=True)
    args.pid_file.write_text(f"{process.pid}\n")
    if wait_ready(url, process):
        print(f"mlflow server started (pid {process.pid}) at {url}", flush=True)
        return 0
    tail = args.log_file.read_text(errors="replace").splitlines()[-20:]
    print(f"mlflow server did not answer at {url}/health; end of {args.log_file}:",
          *tail, sep="\n", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
