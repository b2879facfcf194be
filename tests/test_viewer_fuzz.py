"""Fuzzing every route and query parameter (hypothesis, bounded): no 5xx, errors are short JSON."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

IDS = ["pyramid", "CMU-1-Small-Region", "escape", "outside", "not-a-slide", "missing"]
ROUTES = [
    "/",
    "/slides/{id}",
    "/slide/{id}.dzi",
    "/overlay/{id}.dzi",
    "/slide/{id}_files/{a}/{b}_{c}.jpeg",
    "/overlay/{id}_files/{a}/{b}_{c}.png",
    "/api/slides",
    "/api/slides/{id}",
    "/api/slides/{id}/topk",
    "/api/slides/{id}/patch",
    "/api/colorbar",
    "/api/colormaps",
    "/slides/{id}/patch/{a}.jpeg",
    "/slides/{id}/thumbnail.jpeg",
    "/vendor/openseadragon/{p}",
    "/static/{p}",
]
PARAMS = [
    "cmap",
    "class",
    "norm",
    "threshold",
    "blur",
    "k",
    "order",
    "x",
    "y",
    "size",
    "width",
    "height",
]

hostile_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "..",
            "../..",
            "%2F",
            "%2e%2e",
            "/etc/passwd",
            "\x00",
            "nan",
            "inf",
            "-1",
            "1e999",
            "9" * 40,
            " 7",
            "+7",
            "7_0",
            "٣",
            "jet_r",
            "jet",
            "percentile",
            "raw",
            "top",
            "bottom",
            "0",
            "1",
            "0.5",
            "-0",
            "1e-320",
            "true",
            "[]",
            "{}",
        ]
    ),
)
number_like = st.one_of(st.integers(-5, 100_000).map(str), hostile_text)


@st.composite
def requests(draw):
    template = draw(st.sampled_from(ROUTES))
    path = template.format(
        id=quote(draw(st.one_of(st.sampled_from(IDS), hostile_text)), safe=""),
        a=quote(draw(number_like), safe=""),
        b=quote(draw(number_like), safe=""),
        c=quote(draw(number_like), safe=""),
        p=quote(draw(hostile_text), safe="/%"),
    )
    query = draw(st.dictionaries(st.sampled_from(PARAMS), number_like, max_size=5))
    return path, query


@settings(
    max_examples=600,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests())
def test_no_request_gets_a_5xx_or_a_trace(client, request):
    check_answer(client, request)


def check_answer(client, request) -> None:
    """Below 500, no traceback; an error is short JSON that names no server folder."""
    path, query = request
    response = client.get(path, query_string=query)
    body = response.get_data()
    assert response.status_code < 500, (path, query, response.status_code, body[:300])
    assert b"Traceback" not in body
    if response.status_code >= 400:
        assert response.mimetype == "application/json", (path, query, response.status_code)
        error = json.loads(body)
        assert "/tmp/" not in error["error"], error
        assert error["status"] == response.status_code and 0 < len(error["error"]) < 500


COMPARED_ROUTES = [
    *ROUTES,
    "/api/slides/{id}/agreement",
    "/api/agreement",
    "/api/slides/{id}/histogram",
    "/api/slides/{id}/regions",
    "/api/slides/{id}/annotations",
    "/api/slides/{id}/localization",
    "/api/localization",
]
COMPARED_PARAMS = [*PARAMS, "exp", "minus", "a", "b", "lo", "hi", "bins"]
experiment_like = st.one_of(
    st.sampled_from(
        [
            "ABMIL_A",
            "CLAM_B",
            "ABMIL_C",
            "ABMIL_A,CLAM_B",
            "ABMIL_A,ABMIL_A",
            "ABMIL_A,CLAM_B,ABMIL_C,X",
            "",
        ]
    ),
    hostile_text,
)


@st.composite
def compared_requests(draw):
    template = draw(st.sampled_from(COMPARED_ROUTES))
    path = template.format(
        id=quote(draw(st.one_of(st.sampled_from(["alpha", "beta"]), hostile_text)), safe=""),
        a=quote(draw(number_like), safe=""),
        b=quote(draw(number_like), safe=""),
        c=quote(draw(number_like), safe=""),
        p=quote(draw(hostile_text), safe="/%"),
    )
    query = draw(
        st.dictionaries(
            st.sampled_from(COMPARED_PARAMS), st.one_of(number_like, experiment_like), max_size=5
        )
    )
    return path, query


@pytest.fixture(scope="module")
def compared_client(compared_cohort):
    from viewer.app import create_app

    configs = [str(compared_cohort.configs[n]) for n in ("ABMIL_A", "CLAM_B", "ABMIL_C")]
    return create_app({"SCORING_CONFIG": configs}).test_client()


@settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=compared_requests())
def test_no_request_to_several_experiments_gets_a_5xx(compared_client, request):
    check_answer(compared_client, request)
