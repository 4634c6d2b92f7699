"""README promises that the code must keep."""
import re
from pathlib import Path

from tools import confdoc
from ulv_spark.cli import COMMANDS

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def test_conf_reference_matches_the_code():
    block = README.split("<!-- confdoc:start -->")[1].split("<!-- confdoc:end -->")[0].strip()
    assert block == confdoc.markdown(), "README conf reference is stale: run python -m tools.confdoc"


def test_every_command_is_documented_and_has_a_job_file():
    for name in COMMANDS:
        assert f"| `{name}` |" in README
        if name != "tables":
            assert (REPO / "jobs" / f"{name}.py").exists()


def test_the_two_commands_are_make_targets():
    makefile = (REPO / "Makefile").read_text()
    for target in ("setup", "demo", "test", "test-fast", "bench"):
        assert re.search(rf"^{target}:", makefile, re.M)
    assert "make demo" in README and "make test" in README
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_readme_spark_submit_command_is_the_one_the_cluster_test_runs():
    """README's spark-submit block = tools.cluster.submit_command (what test_cluster submits)."""
    import shlex

    from tools.cluster import submit_command

    block = README.split("pip wheel --no-deps --no-build-isolation -w dist .\n")[1].split("```")[0]
    documented = shlex.split(block.replace("\\\n", " "), comments=False)
    version = re.search(r'version="([^"]+)"', (REPO / "setup.py").read_text()).group(1)
    expected = submit_command("spark://127.0.0.1:7077", f"dist/ulv_spark-{version}-py3-none-any.whl",
                              "jobs/nightly.py", ["--conf", "conf/standalone.yaml", "--as-of", "2025-10-01"],
                              python="/repo/.venv/bin/python")
    expected[0] = "spark-submit"  # README runs it with the venv activated
    documented = [t.replace("$PWD", "/repo") for t in documented]
    assert documented == expected
