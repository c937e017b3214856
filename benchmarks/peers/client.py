"""Talks to ``peer_server.py`` running in the peers' environment (one JSON line each way)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from ase import Atoms

from .env import peer_env

SERVER = Path(__file__).resolve().parent / "peer_server.py"


def atoms_spec(atoms: Atoms) -> dict[str, Any]:
    """A JSON-able copy of a structure (numbers, positions Å, cell Å, pbc)."""
    return {
        "numbers": atoms.numbers.tolist(),
        "positions": atoms.positions.tolist(),
        "cell": atoms.cell.array.tolist(),
        "pbc": atoms.pbc.tolist(),
    }


class PeerError(RuntimeError):
    pass


class PeerProcess:
    """A running ``peer_server.py``; ``request`` sends one command and waits for its answer."""

    def __init__(self, python: Path, threads: int) -> None:
        env = peer_env(threads)
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen(
            [str(python), str(SERVER), "--threads", str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def request(self, cmd: str, **fields: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise PeerError(f"peer server exited (code {self.proc.poll()}) during {cmd!r}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise PeerError(f"peer server failed on {cmd!r}: {reply.get('error')}")
        return reply

    def set_systems(self, systems: dict[str, list[Atoms]]) -> None:
        specs = {name: [atoms_spec(a) for a in group] for name, group in systems.items()}
        self.request("systems", systems=specs)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
