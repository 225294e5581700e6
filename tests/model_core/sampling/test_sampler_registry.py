"""Samplers come from the registry alone: a sampler registered there is offered by the API schema, the
survey, the CLI and validation, and run by the trajectory loop, with no other file touched."""
from __future__ import annotations

import argparse

import pytest
import torch

import sampler_support
from conftest import make_settings
from model_core.sampling import registry
from sampler_support import THROWAWAY
from worker import db


@pytest.fixture
def throwaway():
    registry.register(registry.SamplerInfo(
        THROWAWAY, "sampler_support:StatefulDDIM", "a test sampler: DDIM without noise draws",
        stochastic=False, noise_draws_per_step=0))
    sampler_support.INSTANCES.clear()
    yield THROWAWAY
    registry.unregister(THROWAWAY)


@pytest.fixture
def settings(tmp_path):
    s = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'api.db'}",
                      broker_url="filesystem://localhost/", redis_url=None)
    yield s
    db.dispose_engines()


def _sampler_enum(schema: dict, model: str) -> list[str]:
    prop = schema["components"]["schemas"][model]["properties"]["sampler"]
    return next(choice["enum"] for choice in prop["anyOf"] if choice.get("type") == "string")


def test_the_api_and_survey_schemas_offer_a_registered_sampler(throwaway, settings):
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(settings, run_reaper=False)) as client:
        spec = client.get("/openapi.json").json()
    for model in ("GenerationRequest", "StudyCreate"):
        assert _sampler_enum(spec, model) == [*registry.names()], model
        assert _sampler_enum(spec, model)[-1] == throwaway and "dpmpp_2m" in _sampler_enum(spec, model)

    registry.unregister(throwaway)
    with TestClient(create_app(settings, run_reaper=False)) as client:
        assert throwaway not in _sampler_enum(client.get("/openapi.json").json(), "GenerationRequest")


def test_the_cli_offers_a_registered_sampler(throwaway, capsys):
    from rguide.cli import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["sample", "--help"])
    assert throwaway in capsys.readouterr().out
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("sample", "evaluate"):
        choices = next(a.choices for a in sub.choices[command]._actions if a.dest == "sampler")
        assert list(choices) == [*registry.names()] and throwaway in choices, command
    args = parser.parse_args(["sample", "--labels", "0", "--sampler", throwaway, "--out", "x"])
    assert args.sampler == throwaway


def test_generation_requests_and_studies_accept_a_registered_sampler(throwaway, settings):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.survey.schemas import StudyCreate
    from app.survey.studies import plan_study

    with TestClient(create_app(settings, run_reaper=False)) as client:
        body = {"preset": "tiny", "class_labels": [1], "guidance": "robust", "steps": "5", "sampler": throwaway}
        r = client.post("/v1/generations", json=body)
        assert r.status_code == 202, r.text
        assert r.json()["sampler"] == throwaway  # stored as data: no CHECK lists the sampler names
        bad = client.post("/v1/generations", json={**body, "sampler": "not_registered"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "sampler"
    plan = plan_study(StudyCreate(preset="tiny", num_pairs=2, steps="5", sampler=throwaway), settings)
    assert plan.sampler == throwaway and all(spec.sampler == throwaway for _, spec in plan.specs)


def test_the_trajectory_loop_runs_a_registered_sampler(throwaway):
    from model_core.pipeline import get_pipeline
    from model_core.sampling.loop import Trajectory, sample

    pipe = get_pipeline("tiny", "cpu")
    got = pipe.sample([1, 2], [3, 4], "robust", 1.0, "5", throwaway)
    (inst,) = sampler_support.INSTANCES  # one instance for the batch, which kept its state over all steps
    assert [s[0] for s in inst.seen] == [0, 1, 2, 3, 4] and [s[1] for s in inst.seen] == [4, 3, 2, 1, 0]
    assert all(guided and draws == 0 for _, _, guided, draws in inst.seen)
    # DDIM with eta 0 multiplies its noise by zero: the same images, though no noise was drawn.
    want = pipe.sample([1, 2], [3, 4], "robust", 1.0, "5", "ddim")
    assert all((a == b).all() for a, b in zip(got, want))

    # noise_draws_per_step = 0: each generator is advanced by x_T alone.
    gens = [torch.Generator().manual_seed(3)]
    sample(pipe.diffusion("5"), pipe.unet, pipe.providers, [Trajectory(1, 3, "none")], pipe.shape,
           sampler=throwaway, generators=gens)
    ref = torch.Generator().manual_seed(3)
    torch.randn(pipe.shape, generator=ref)
    assert torch.equal(gens[0].get_state(), ref.get_state())
    assert not sampler_support.INSTANCES[-1].seen[0][2]  # no trajectory guided: ctx.grad is None
