"""stdout of a command is its JSON summary alone: prints of libraries, native code and children go to stderr."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

NOISY_STAGE = '''
import os
import subprocess
import sys


def run_noisy(ctx):
    print("a library prints its optimiser result")           # sys.stdout (lifetimes / scipy)
    os.write(1, b"native code writes to fd 1\\n")             # file descriptor 1 (torch, the JVM)
    subprocess.run([sys.executable, "-c", "print('a child process prints')"], check=True)  # TorchDistributor ranks
    return {"rows": 3}
'''


def test_stdout_carries_the_summary_alone_when_the_stage_prints(tmp_path):
    (tmp_path / "noisy_stage.py").write_text(NOISY_STAGE)
    driver = textwrap.dedent("""
        import sys
        from ulv_spark import cli
        cli.COMMANDS["noisy"] = cli.Command("noisy_stage:run_noisy", "a stage that prints")
        sys.exit(cli.main(["noisy", "--as-of", "2025-10-01", "--run-id", "r1"]))
    """)
    env = {"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout) == {"command": "noisy", "as_of": "2025-10-01", "run_id": "r1", "rows": 3}
    for line in ("a library prints its optimiser result", "native code writes to fd 1", "a child process prints"):
        assert line in proc.stderr
