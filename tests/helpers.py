"""Helpers several test files share."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def start_mlflow_server(folder: Path, backend: str, port: int) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:`port` over `backend`, started and answering /health.

    MLflow 3's job-execution workers (GenAI trace jobs, which this project never submits)
    are off: they cost seconds of CPU at every start."""
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            assert proc.poll() is None, "mlflow server exited"
            time.sleep(0.5)
    proc.terminate()
    raise AssertionError("mlflow server did not start")
