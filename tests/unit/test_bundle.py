"""The Databricks Asset Bundle parses and defines the nightly job as documented."""
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _job():
    bundle = yaml.safe_load((REPO / "databricks.yml").read_text())
    assert bundle["bundle"]["name"] == "ulv_spark"
    assert {"dev", "prod"} <= set(bundle["targets"])
    resources = {}
    for pattern in bundle["include"]:
        for path in REPO.glob(pattern):
            resources.update(yaml.safe_load(path.read_text())["resources"]["jobs"])
    return bundle, resources["ulv_nightly"]


def test_nightly_job_tasks_form_the_pipeline_chain():
    _, job = _job()
    tasks = {t["task_key"]: t for t in job["tasks"]}
    assert list(tasks) == ["ingest", "embed", "features", "train", "score", "segment", "plan", "evaluate"]
    deps = {k: [d["task_key"] for d in t.get("depends_on", [])] for k, t in tasks.items()}
    assert deps == {"ingest": [], "embed": ["ingest"], "features": ["embed"], "train": ["features"], "score": ["train"],
                    "segment": ["score"], "plan": ["segment"], "evaluate": ["plan"]}
    for key, task in tasks.items():
        wheel = task["python_wheel_task"]
        assert wheel["package_name"] == "ulv_spark" and wheel["entry_point"] == "ulv-spark"
        params = wheel["parameters"]
        assert "--as-of" in params and "{{job.parameters.as_of}}" in params
        if key != "evaluate":
            assert params[:3] == ["nightly", "--only", key]


def test_training_runs_on_a_gpu_cluster_and_the_job_is_scheduled():
    bundle, job = _job()
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job["job_clusters"]}
    train = next(t for t in job["tasks"] if t["task_key"] == "train")
    gpu = clusters[train["job_cluster_key"]]
    assert "gpu" in gpu["spark_version"] and gpu["spark_conf"]["spark.task.resource.gpu.amount"] == "1"
    assert gpu["node_type_id"] == "${var.gpu_node_type}" and "gpu_node_type" in bundle["variables"]
    assert job["schedule"]["quartz_cron_expression"].split()[2] == "2"
    assert job["max_concurrent_runs"] == 1


def test_entry_point_and_stage_names_exist_in_the_package():
    from ulv_spark.cli import COMMANDS

    setup_py = (REPO / "setup.py").read_text()
    assert "ulv-spark=ulv_spark.cli:" in setup_py
    _, job = _job()
    for task in job["tasks"]:
        assert task["python_wheel_task"]["parameters"][0] in COMMANDS
