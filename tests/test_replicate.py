"""``rguide replicate``: the plan resumes step by step, and the page puts our numbers beside the paper's."""
from __future__ import annotations

import json
import re

import pytest

from model_core.presets import get_preset
from rguide import replicate as rp
from rguide.cli import main as rguide_main


def test_resume_skips_finished_steps_and_reruns_changed_ones(tmp_path):
    preset = get_preset("demo-uncond")
    calls: list[list[str]] = []

    def runner(argv):
        calls.append(argv)
        return 0

    steps = rp.plan(preset, rp.Sizes(per_class=2), tmp_path)
    assert [s.key for s in steps] == ["classifiers", "classifiers-pgd20", "fig2", "fig3", "fig4", "fig5",
                                      "table1", "table2"]
    rp.run_plan(steps, tmp_path, runner, progress=False, log=lambda _: None)
    assert len(calls) == len(steps)
    marker = json.loads((tmp_path / "table1" / rp.MARKER).read_text())
    assert marker["argv"] == steps[6].argv and "code_version" in marker["environment"]

    calls.clear()
    rp.run_plan(steps, tmp_path, runner, progress=False, log=lambda _: None)
    assert calls == []

    bigger = rp.plan(preset, rp.Sizes(per_class=3), tmp_path)
    rp.run_plan(bigger, tmp_path, runner, progress=False, log=lambda _: None)
    assert [c[0] for c in calls] == ["evaluate"]  # only Table 1 depends on --per-class


def test_a_failed_step_leaves_no_marker_and_stops(tmp_path):
    steps = rp.plan(get_preset("demo-uncond"), rp.Sizes(), tmp_path)
    seen = []

    def runner(argv):
        seen.append(argv)
        return 2 if len(seen) == 2 else 0

    with pytest.raises(RuntimeError, match="classifiers-pgd20"):
        rp.run_plan(steps, tmp_path, runner, progress=False, log=lambda _: None)
    assert len(seen) == 2
    assert rp.step_done(steps[0], tmp_path) and not rp.step_done(steps[1], tmp_path)


def test_pgd20_uses_the_training_radius_with_step_eps_over_8(tmp_path):
    from model_core.robustness.defaults import attack_settings

    preset = get_preset("demo")
    step = next(s for s in rp.plan(preset, rp.Sizes(), tmp_path) if s.key == "classifiers-pgd20")
    eps = attack_settings(preset).eps
    argv = step.argv
    assert float(argv[argv.index("--eps") + 1]) == eps
    assert float(argv[argv.index("--step-size") + 1]) == pytest.approx(eps / 8)
    assert argv[argv.index("--attack-steps") + 1] == "20"


@pytest.mark.slow
def test_small_replication_writes_one_page_with_the_papers_numbers_beside_ours(tmp_path, capsys):
    out = tmp_path / "rep"
    argv = ["replicate", "--preset", "demo-uncond", "--out", str(out), "--per-class", "1", "--pilot-per-class", "1",
            "--heldout", "4", "--classifier-n", "4", "--steps", "8", "--no-progress"]
    assert rguide_main(argv) == 0
    html = (out / "index.html").read_text()
    paper = rp.paper()
    # Table 1: the paper's FIDs and ours, from this run's results.json
    for fid in paper["table1"]["fid"]:
        assert f"{fid:.2f}" in html
    rows = json.loads((out / "table1" / "results.json").read_text())["rows"]
    robust = next(r for r in rows if r["method"] == "robust" and r["scale"] == get_preset("demo-uncond")
                  .scale_for("robust", None))
    assert f"{robust['fid']:.2f}" in html
    # Table 2: the paper's 50% row and our threshold rows from the pilot's statistics
    assert "61.5%" in html and "31.5%" in html
    stats = json.loads((out / "table2" / "stats.json").read_text())
    assert f"{stats['n_answers']:,} simulated answers" in html
    # every figure is on the page and every step's command is printed
    for key in ("fig2", "fig3", "fig4", "fig5"):
        assert re.search(rf'src="{key}/\w+\.png"', html)
    assert html.count("<pre>rguide ") == 8
    assert "Not run yet" not in html

    capsys.readouterr()
    assert rguide_main(argv) == 0  # resumed: nothing runs again
    assert capsys.readouterr().out.count("done earlier") == 8


def test_bad_sizes_are_refused_naming_the_flag(capsys):
    assert rguide_main(["replicate", "--preset", "demo", "--per-class", "0"]) == 2
    assert "--per-class" in capsys.readouterr().err
