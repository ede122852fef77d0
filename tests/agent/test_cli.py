"""The ``cmagent`` command line as a process: output into a closed pipe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agent.cli import EXIT_BROKEN_PIPE

RECORDING = Path(__file__).parents[2] / "drivers/sim/data/ball_007_118.npy"


class TestBrokenPipe:
    def test_closed_pipe_ends_quietly(self) -> None:
        # Like `cmagent analyze FILE --json | head -0`: the reader is gone
        # before the command writes its first line. (argparse's --help
        # output would not do: argparse ignores write errors itself.)
        command = ["analyze", str(RECORDING), "--fs", "12000", "--json"]
        process = subprocess.Popen(
            [sys.executable, "-m", "agent", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert process.stdout is not None
        process.stdout.close()
        _, stderr = process.communicate(timeout=60)

        assert process.returncode == EXIT_BROKEN_PIPE
        assert b"Traceback" not in stderr
        assert stderr == b""
