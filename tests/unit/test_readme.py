"""README promises that the code must keep."""
import re
from pathlib import Path

from ulv_spark import confdoc
from ulv_spark.cli import COMMANDS

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def test_conf_reference_matches_the_code():
    block = README.split("<!-- confdoc:start -->")[1].split("<!-- confdoc:end -->")[0].strip()
    assert block == confdoc.markdown(), "README conf reference is stale: run python -m ulv_spark.confdoc"


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
