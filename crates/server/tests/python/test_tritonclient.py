"""The real Triton HTTP client (tritonclient[http] from PyPI) against `caffe-sandbox serve`.

Run by crates/server/tests/python_client.rs, which starts the server on 127.0.0.1 and passes:
CS_SERVER_URL (host:port), CS_MODEL, CS_SAMPLES (directory of PNGs), CS_EXPECTED (JSON: image name -> the
CLI's probabilities for it).
"""
import base64
import json
import os

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

URL = os.environ["CS_SERVER_URL"]
MODEL = os.environ["CS_MODEL"]
SAMPLES = os.environ["CS_SAMPLES"]
EXPECTED = json.loads(os.environ["CS_EXPECTED"])


@pytest.fixture(scope="module")
def client():
    c = httpclient.InferenceServerClient(url=URL, connection_timeout=60.0, network_timeout=120.0)
    yield c
    c.close()


def png(name):
    with open(os.path.join(SAMPLES, name), "rb") as f:
        return f.read()


def image_input(data, binary):
    i = httpclient.InferInput("data", [1], "BYTES")
    i.set_data_from_numpy(np.array([data], dtype=np.object_), binary_data=binary)
    return i


def test_health(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready("no_such_model")


def test_metadata(client):
    server = client.get_server_metadata()
    assert server["name"] == "caffe-sandbox"
    assert "classification" in server["extensions"]
    meta = client.get_model_metadata(MODEL)
    assert meta["name"] == MODEL
    assert meta["inputs"] == [{"name": "data", "datatype": "FP32", "shape": [-1, 3, 224, 224]}]
    assert meta["outputs"] == [{"name": "prob", "datatype": "FP32", "shape": [-1, 2]}]
    index = client.get_model_repository_index()
    assert {"name": MODEL, "version": "1", "state": "READY"} in index


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_infer_binary_image_equals_the_cli(client, name):
    out = httpclient.InferRequestedOutput("prob", binary_data=True)
    r = client.infer(MODEL, [image_input(png(name), True)], outputs=[out])
    prob = r.as_numpy("prob")
    assert prob.dtype == np.float32 and prob.shape == (1, 2)
    np.testing.assert_allclose(prob[0], EXPECTED[name], atol=1e-6)


def test_infer_json_image_as_base64(client):
    name = sorted(EXPECTED)[0]
    out = httpclient.InferRequestedOutput("prob", binary_data=False)
    r = client.infer(MODEL, [image_input(base64.b64encode(png(name)), False)], outputs=[out])
    np.testing.assert_allclose(r.as_numpy("prob")[0], EXPECTED[name], atol=1e-6)


def test_fp32_tensor_json_and_binary_modes_agree(client):
    x = np.random.default_rng(7).uniform(-120, 130, size=(2, 3, 224, 224)).astype(np.float32)
    results = []
    for binary in (False, True):
        i = httpclient.InferInput("data", list(x.shape), "FP32")
        i.set_data_from_numpy(x, binary_data=binary)
        out = httpclient.InferRequestedOutput("prob", binary_data=binary)
        r = client.infer(MODEL, [i], outputs=[out], request_id=f"fp32-{binary}")
        assert r.get_response()["id"] == f"fp32-{binary}"
        results.append(r.as_numpy("prob"))
    assert results[0].shape == (2, 2)
    np.testing.assert_allclose(results[0].sum(axis=1), [1.0, 1.0], rtol=1e-5)
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("binary", [False, True])
def test_classification(client, binary):
    name = sorted(EXPECTED)[0]
    want = EXPECTED[name]
    out = httpclient.InferRequestedOutput("prob", binary_data=binary, class_count=2)
    r = client.infer(MODEL, [image_input(png(name), True)], outputs=[out])
    rows = [v.decode() if isinstance(v, bytes) else v for v in r.as_numpy("prob").reshape(-1)]
    assert len(rows) == 2
    parsed = [row.split(":") for row in rows]
    order = sorted(range(2), key=lambda i: -want[i])
    assert [int(p[1]) for p in parsed] == order
    assert [p[2] for p in parsed] == [["sfw", "nsfw"][i] for i in order]
    for p in parsed:
        assert abs(float(p[0]) - want[int(p[1])]) <= 1e-5


def test_errors_are_typed(client):
    with pytest.raises(InferenceServerException) as e:
        client.infer("no_such_model", [image_input(b"x", True)])
    assert e.value.status() == "404" and "unknown model" in e.value.message()
    bad = httpclient.InferInput("data", [1, 3, 10, 10], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3, 10, 10), np.float32))
    with pytest.raises(InferenceServerException) as e:
        client.infer(MODEL, [bad])
    assert e.value.status() == "400" and "does not match" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        client.infer(MODEL, [image_input(b"not an image", True)])
    assert e.value.status() == "400"
    assert client.is_server_ready()
