import pytest

from nas.errors import BudgetError
from nas.units import parse_budget


@pytest.mark.parametrize(
    "text,metric,limit",
    [
        ("150MFLOPs", "macs", 150e6),
        ("0.15GFLOPs", "macs", 150e6),
        ("150MMACs", "macs", 150e6),
        ("5ms", "latency_ms", 5.0),
        ("500us", "latency_ms", 0.5),
        ("0.005s", "latency_ms", 5.0),
        ("3Mparams", "params", 3e6),
        ("500Kparams", "params", 5e5),
    ],
)
def test_parse_budget(text, metric, limit):
    b = parse_budget(text)
    assert b.metric == metric
    assert b.limit == pytest.approx(limit)
    assert b.slack(limit) == pytest.approx(0.0)


@pytest.mark.parametrize("text", ["150", "-5ms", "0ms", "150MB", "", "fast", "5 parsecs"])
def test_bad_budgets(text):
    with pytest.raises(BudgetError) as e:
        parse_budget(text)
    assert e.value.field == "budget"
