"""Cross-check: lifetimes RFM of every CDNOW customer equals ours (Spark) at the same observation end."""
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ulv_spark.features.inputs import prepare_orders
from ulv_spark.features.rfm import user_rfm


def _cdnow() -> pd.DataFrame:
    import lifetimes

    path = Path(lifetimes.__file__).parent / "datasets" / "CDNOW_master.txt"
    raw = pd.read_csv(path, sep=r"\s+", header=None, skiprows=1,
                      names=["customer_id", "date", "number_of_cds", "dollar_value"], dtype={"customer_id": str})
    raw["date"] = pd.to_datetime(raw["date"].astype(str), format="%Y%m%d")
    return raw


@pytest.fixture(scope="module")
def cdnow():
    return _cdnow()


@pytest.mark.parametrize("as_of", [dt.date(1998, 7, 1), dt.date(1997, 10, 1)])
def test_rfm_equals_lifetimes_for_every_cdnow_customer(spark, cdnow, as_of):
    from lifetimes.utils import summary_data_from_transaction_data

    observation_end = pd.Timestamp(as_of - dt.timedelta(days=1))
    expected = summary_data_from_transaction_data(
        cdnow, "customer_id", "date", monetary_value_col="dollar_value",
        observation_period_end=observation_end, freq="D").sort_index()

    orders = spark.createDataFrame(pd.DataFrame({
        "user_id": cdnow["customer_id"], "order_id": cdnow.index.astype(str),
        "order_ts": cdnow["date"], "amount": cdnow["dollar_value"].astype(float),
        "quantity": cdnow["number_of_cds"].astype(float)}))
    got = (user_rfm(prepare_orders(orders), as_of=as_of).toPandas()
           .set_index("user_id").sort_index())

    if as_of == dt.date(1998, 7, 1):
        assert len(expected) == 23570
    assert list(got.index) == list(expected.index)
    for col in ("frequency", "recency", "T"):
        np.testing.assert_array_equal(got[col].to_numpy(), expected[col].to_numpy(), err_msg=col)
    np.testing.assert_allclose(got["monetary_value"].to_numpy(), expected["monetary_value"].to_numpy(),
                               rtol=0, atol=1e-9)
