import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tables_command_runs_in_a_fresh_process(tmp_path, write_conf):
    conf = write_conf(f"lakehouse:\n  root: {tmp_path / 'lh'}\n  schema: cli_t\nspark:\n  shuffle_partitions: 2\n")
    proc = subprocess.run([sys.executable, "-m", "ulv_spark.cli", "tables", "--conf", str(conf)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["command"] == "tables" and out["tables"] == []
    assert out["lakehouse"] == str(tmp_path / "lh")
