"""A warm ``python`` for the docs commands: a server that has imported JAX, flax, matplotlib
and pairviz_jax once forks a child per command, which runs the command's script or module
as a fresh interpreter would (its argv, working directory, environment and standard streams;
``__main__``, exit status, atexit handlers). Only the imports are shared, and none of them
starts a thread or a JAX backend (checked before serving).

Every ``python SCRIPT ...`` or ``python -m MODULE ...`` of a docs page costs about 2.5 s of
CPU less (the imports), which is half of a ``visualize.py`` command on the demo model. Any
other form (``python -c``, options before the script) runs the real interpreter. The client is
the ``python`` on the docs commands' ``PATH``:

    python tests/docs_zygote.py serve SOCKET   # the server (the test starts it)
    python -I -S tests/docs_zygote.py ...      # the client (``bin/python``, see ``client``)
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys

ENV = "PAIRVIZ_DOCS_ZYGOTE"  # the server's socket, in the commands' environment
# What the server imports before serving: what every visualize.py command imports first.
PRELOAD = (
    "numpy",
    "PIL.Image",
    "matplotlib.pyplot",
    "jax",
    "jax.numpy",
    "flax.linen",
    "pairviz_jax",
    "pairviz_jax.cli",
    "pairviz_jax.explain",
    "pairviz_jax.models",
    "pairviz_jax.plotting",
    "pairviz_jax.runs.load",
    "pairviz_jax.checkpoints",
    "pairviz_jax.data.demo",  # pairviz_jax.data imports these on first use only
    "pairviz_jax.data.photos",
    "pairviz_jax.data.pipeline",
    "pairviz_jax.data.sources",
    "pairviz_jax.batch.cli",
    "pairviz_jax.evaluate",
    "pairviz_jax.viewer",
    "scipy.ndimage",
    "optax",
)
# Set by ``import pairviz_jax`` in the server (the XLA:CPU workaround); a child keeps the
# server's value, which is what its own ``import pairviz_jax`` would have made of it.
KEEP = ("XLA_FLAGS",)


def _simple(argv: list[str]) -> bool:
    """``python SCRIPT ...`` or ``python -m MODULE ...``: what the server runs."""
    if len(argv) >= 2 and not argv[1].startswith("-"):
        return True
    return len(argv) >= 3 and argv[1] == "-m"


def client(real_python: str) -> None:
    """The ``python`` of the commands: asks the server, or runs ``real_python`` itself."""
    argv = sys.argv
    path = os.environ.get(ENV)
    if path and _simple(argv):
        try:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(path)
        except OSError:
            conn = None
        if conn is not None:
            body = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)})
            body = body.encode()
            socket.send_fds(conn, [struct.pack("!Q", len(body))], [0, 1, 2])
            conn.sendall(body)
            reply = b""
            while len(reply) < 4:
                chunk = conn.recv(4 - len(reply))
                if not chunk:
                    sys.exit(f"{argv[0]}: the docs test's python server went away")
                reply += chunk
            sys.exit(struct.unpack("!i", reply)[0])
    os.execv(real_python, [real_python, *argv[1:]])


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("client closed")
        data += chunk
    return data


def _child(request: dict, fds: list[int]) -> None:
    """Runs one command in this forked process; never returns."""
    import atexit
    import runpy
    import traceback

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    env = request["env"]
    for key in [k for k in os.environ if k not in env and k not in KEEP]:
        del os.environ[key]
    os.environ.update({k: v for k, v in env.items() if k not in KEEP})
    argv = request["argv"]
    code = 0
    try:
        if argv[1] == "-m":
            sys.argv = [argv[2], *argv[3:]]
            sys.path[0] = os.getcwd()
            runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
        else:
            script = os.path.abspath(argv[1])
            sys.argv = argv[1:]
            sys.path[0] = os.path.dirname(script)
            runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code & 0xFF)


def serve(path: str) -> None:
    """Imports ``PRELOAD``, then runs each request in a forked child, one at a time, and
    appends each child's CPU seconds (user + system, its own children included) and
    command line to ``path + ".cpu"``."""
    import importlib
    import threading

    for name in PRELOAD:
        importlib.import_module(name)
    from jax._src import xla_bridge

    assert threading.active_count() == 1, "a preloaded module started a thread"
    assert not xla_bridge._backends, "a preloaded module started a JAX backend"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path + ".tmp")
    sock.listen(8)
    os.rename(path + ".tmp", path)  # ready
    while True:
        conn, _ = sock.accept()
        with conn:
            try:
                head, fds, _, _ = socket.recv_fds(conn, 8, 3)
                (n,) = struct.unpack("!Q", head)
                request = json.loads(_recv_exactly(conn, n))
            except (ConnectionError, struct.error, ValueError):
                continue
            pid = os.fork()
            if pid == 0:
                sock.close()
                _child(request, fds)
            for fd in fds:
                os.close(fd)
            _, status, usage = os.wait4(pid, 0)
            code = os.waitstatus_to_exitcode(status)
            with open(path + ".cpu", "a", encoding="utf-8") as log:  # CPU s of each command
                log.write(f"{usage.ru_utime + usage.ru_stime:.2f}\t{' '.join(request['argv'])}\n")
            code = 128 - code if code < 0 else code  # killed by a signal: as bash reports
            try:
                conn.sendall(struct.pack("!i", code))
            except OSError:
                pass


def client_script(real_python: str) -> str:
    """The text of ``bin/python``: this module's client, started without site or
    ``PYTHONPATH`` (tens of milliseconds)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return (
        f"#!{real_python} -IS\n"
        "import sys\n"
        f"sys.path.insert(0, {here!r})\n"
        "import docs_zygote\n"
        f"docs_zygote.client({real_python!r})\n"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2])
    else:
        sys.exit("usage: python tests/docs_zygote.py serve SOCKET")
