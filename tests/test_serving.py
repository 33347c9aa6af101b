"""Serving refuses bad input with 4xx, never 500 (issue 14, item 7).

The int8 TinyNet is saved as a pyfunc with ``log_model``'s arguments (no tracking store), then
loaded by MLflow and driven through MLflow's own scoring app (``mlflow.pyfunc.scoring_server.
init``), in process, over ASGI: what ``mlflow models serve`` runs behind uvicorn.
"""

from __future__ import annotations

import asyncio
import json
import warnings

import mlflow
import numpy as np
import pytest
import torch
import yaml
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import scoring_server

from inc_flow.errors import IncFlowError, SaveLoadError
from inc_flow.model import pyfunc as flavor
from inc_flow.model import serving, signature
from inc_flow.quant.ao import quiet
from tests.helpers.saving import int8_tinynet
from tests.toys import SHAPE

pytestmark = pytest.mark.no_mlflow


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A pyfunc saved as ``log_model`` logs it (loader, sidecar, signature, model_config)."""
    root = tmp_path_factory.mktemp("served")
    q = int8_tinynet(3)
    stage = root / flavor.DATA_DIR
    q.save(stage)
    specs = [signature.InputSpec(None, signature.FLOAT32, SHAPE)]
    sidecar = signature.sidecar_data("tests.toys:TinyNet", specs, 1)
    (stage / signature.SIDECAR_FILE).write_text(yaml.safe_dump(sidecar))
    out = np.zeros((1, 10), np.float32)
    mlflow.pyfunc.save_model(
        root / "model",
        loader_module=flavor.LOADER_MODULE,
        data_path=str(stage),
        signature=signature.model_signature(specs, out),
        model_config=dict(serving.DEFAULTS),
        input_example=q.example_inputs[0][:1].numpy(),
        pip_requirements=["torch"],  # inferring them would load the model in a subprocess
    )
    return q, str(root / "model")


def _int8(q, x: np.ndarray) -> np.ndarray:
    with torch.no_grad(), quiet():
        return q.model(torch.from_numpy(x)).numpy()


X = np.random.default_rng(0).standard_normal((2, *SHAPE), dtype=np.float32)


@pytest.mark.parametrize(("value", "what"), [(np.nan, "1 NaN"), (np.inf, "1 NaN or infinite")])
def test_predict_refuses_nan_and_inf_with_a_400_error(model, value, what):
    q, uri = model
    pyfunc = mlflow.pyfunc.load_model(uri)
    x = X.copy()
    x[1, 0, 2, 3] = value
    with pytest.raises(MlflowException, match=what) as e:
        pyfunc.predict(x)
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    assert e.value.get_http_status_code() == 400
    assert isinstance(e.value, IncFlowError)
    assert "index (1, 0, 2, 3)" in e.value.message and "allow_non_finite" in e.value.message
    assert np.array_equal(pyfunc.predict(X), _int8(q, X))  # finite input still served


def test_model_config_allows_non_finite_and_limits_elements(model):
    q, uri = model
    nan = np.full((2, *SHAPE), np.nan, np.float32)
    allowed = mlflow.pyfunc.load_model(uri, model_config={serving.ALLOW_NON_FINITE: True})
    assert np.array_equal(allowed.predict(nan), _int8(q, nan), equal_nan=True)
    small = mlflow.pyfunc.load_model(uri, model_config={serving.MAX_ELEMENTS: 400})
    assert small.predict(X[:1]).shape == (1, 10)
    with pytest.raises(MlflowException, match="800 input values, more than the 400") as e:
        small.predict(X)
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"


@pytest.mark.parametrize(
    ("config", "what"),
    [
        ({serving.ALLOW_NON_FINITE: "yes"}, "true or false"),
        ({serving.MAX_ELEMENTS: 0}, "positive"),
    ],
)
def test_bad_limits_are_named(config, what):
    with pytest.raises(SaveLoadError, match=f"`{next(iter(config))}` must be .*{what}"):
        serving.Limits.from_config(config)


# --- MLflow's scoring app, in process --------------------------------------------------------
async def _post(app, body: bytes) -> tuple[int, dict]:
    sent: list[dict] = []
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/invocations",
        "raw_path": b"/invocations",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    try:
        await app(scope, receive, send)
    except Exception:  # noqa: BLE001, S110 - Starlette re-raises after answering 500
        pass
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    reply = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    try:
        return status, json.loads(reply)
    except ValueError:
        return status, {"body": reply[:200]}


@pytest.fixture
def app(model, monkeypatch):
    """The scoring app as `mlflow models serve` builds it, with a 1 MiB body limit."""
    monkeypatch.setattr(scoring_server, "invocations", scoring_server.invocations)  # restored
    monkeypatch.setenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "true")  # init sets it; restored
    monkeypatch.setenv(flavor.SERVER_MODEL_PATH_ENV, model[1])
    served = scoring_server.load_model_with_mlflow_config(model[1])  # what app.py calls
    return scoring_server.init(served)


def test_scoring_server_answers_bad_bodies_with_4xx_and_keeps_serving(model, app, monkeypatch):
    q, _ = model
    good = json.dumps({"inputs": X.tolist()}).encode()
    status, body = asyncio.run(_post(app, good))
    assert status == 200, body
    assert np.array_equal(np.array(body["predictions"], np.float32), _int8(q, X))

    nan = json.dumps({"inputs": np.full((2, *SHAPE), np.nan).tolist()}).encode()
    status, body = asyncio.run(_post(app, nan))
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE", body
    assert "NaN" in body["message"]

    deep = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"  # RecursionError in json
    status, body = asyncio.run(_post(app, deep))
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE", body
    assert "nested too deeply" in body["message"]
    records = b'{"dataframe_records": [{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}]}"
    assert asyncio.run(_post(app, records))[0] == 400

    for bad in (b'{"inputs": [[1, 2], [3]]}', b'{"inputs": [["a"]]}', b'{"inputs": null}'):
        status, body = asyncio.run(_post(app, bad))
        assert 400 <= status < 500, (bad, body)
    assert asyncio.run(_post(app, good))[0] == 200  # still serving


def test_scoring_server_refuses_a_body_over_the_limit_with_413(model, monkeypatch):
    monkeypatch.setattr(scoring_server, "invocations", scoring_server.invocations)
    monkeypatch.setenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "true")
    monkeypatch.setenv(flavor.SERVER_MODEL_PATH_ENV, model[1])
    config = json.dumps({serving.MAX_REQUEST_BYTES: 10_000})
    monkeypatch.setenv("MLFLOW_PYFUNC_INFERENCE_CONFIG", config)  # how a server is configured
    app = scoring_server.init(scoring_server.load_model_with_mlflow_config(model[1]))
    body = json.dumps({"inputs": X.tolist()}).encode()
    assert len(body) > 10_000
    status, reply = asyncio.run(_post(app, body))
    assert status == 413, reply
    assert f"{len(body)} bytes, more than the 10000" in reply["message"]
    one = json.dumps({"inputs": X[:1].round(3).tolist()}).encode()
    assert len(one) < 10_000
    assert asyncio.run(_post(app, one))[0] == 200


def test_predict_names_ragged_and_too_deep_lists():
    pyfunc = flavor.Int8PyfuncModel(torch.nn.Identity(), [2], 1, "x86")
    deep: list = []
    cur = deep
    for _ in range(5000):
        cur.append([])
        cur = cur[0]
    for bad, what in (([[1.0, 2.0], [3.0]], "inhomogeneous"), (deep, "maximum number of dim")):
        with pytest.raises(serving.InvalidInputError, match=f"ragged data.*{what}") as e:
            pyfunc.predict(bad)
        assert e.value.error_code == "INVALID_PARAMETER_VALUE"


@pytest.mark.parametrize(
    ("where", "value", "found", "first"),
    [
        (0, np.inf, 1, "(0, 0) (value inf)"),
        (-1, np.nan, 1, "(2, 999) (value nan)"),
        (777, -np.inf, 1, "(0, 777) (value -inf)"),
        (None, None, 2, "(0, 5) (value inf)"),  # None: inf and -inf (their sum is NaN)
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("torch_sum", [True, False], ids=["torch sum", "numpy sum"])
def test_the_finite_check_finds_any_nan_or_inf_and_passes_huge_finite_values(
    where, value, found, first, dtype, torch_sum
):
    limits = serving.Limits()
    x = np.ones((3, 1000), dtype)
    flat = x.reshape(-1)
    if where is None:
        flat[5], flat[-5] = np.inf, -np.inf
    else:
        flat[where] = value
    with warnings.catch_warnings():  # the quick sum warns nothing, even for inf + -inf
        warnings.simplefilter("error")
        with pytest.raises(serving.InvalidInputError) as e:
            limits.check([torch.from_numpy(x)], ["the input"], torch_sum)
    assert f"the input holds {found} NaN or infinite value(s), the first at index {first}" in (
        e.value.message
    )
    assert f"model_config `{serving.ALLOW_NON_FINITE}`" in e.value.message
    huge = torch.from_numpy(np.full((3, 1000), np.finfo(dtype).max, dtype))  # its sum: inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        limits.check([huge, -huge], ["a", "b"], torch_sum)  # no error: the exact check decides
