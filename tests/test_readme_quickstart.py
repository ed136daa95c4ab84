"""The README's service quick start, run as written (bash + curl) against a real `copyscope serve`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def quickstart() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- service-quickstart -->\n```bash\n(.*?)```\n<!-- /service-quickstart -->", text, re.S)
    assert block, "README lost its service quick start block"
    return block.group(1)


def json_objects(text: str) -> list:
    """The JSON documents curl printed back to back (without newlines)."""
    decoder, out, at = json.JSONDecoder(), [], text.find("{")
    while at >= 0:
        value, end = decoder.raw_decode(text, at)
        out.append(value)
        at = text.find("{", end)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_service_quickstart_runs_as_written(tmp_path):
    script = quickstart()
    assert script.startswith("PORT=8321\n")
    script = f"set -euo pipefail\nPORT={free_port()}\n" + script.split("\n", 1)[1]
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    proc = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env=os.environ | {"RAY_AUTH_MODE": "disabled"})
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the server too, whatever happened
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, err + (tmp_path / "serve.log").read_text()
    bank, item, review = json_objects(out)
    assert bank["name"] == "known" and item["content_id"] == "photo-1" and item["metadata"] == {"case": 17}
    record = json.loads((tmp_path / "match.json").read_text())
    assert record["decision"] == "match" and record["matches"][0]["content_id"] == "photo-1"
    assert review["reviews"][0]["verdict"] == "confirmed" and review["reviews"][0]["key"] == "ops"
