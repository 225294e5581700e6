"""The paper replicated small: a plan of ``rguide`` commands, run (resumably) and put on one page.

Each step is an ordinary ``rguide`` command line, run in this process with
``rguide.cli.main`` so that the page can print exactly what ran. A step is
done when its directory holds ``replicate-step.json`` with the same command;
a re-run skips it, and a changed command (other sizes, another seed) runs it
again. The commands that sample (``evaluate``, ``pilot``) cache their own
samples, so an interrupted step also resumes part-way.

The paper's numbers come from ``model_core/data/paper_kawar2023.json``: the
one place they are written down.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

MARKER = "replicate-step.json"
PAPER_FILE = "paper_kawar2023.json"


def paper() -> dict[str, Any]:
    return json.loads((resources.files("model_core") / "data" / PAPER_FILE).read_text())


@dataclass(frozen=True)
class Sizes:
    """How much each step measures (flags of rguide replicate; docs/replicate.md)."""

    per_class: int = 20          # Table 1: generated images per class and row
    pilot_per_class: int = 5     # Table 2: seed-matched pairs per class
    heldout: int = 200           # Figures 3 and 4: held-out images the numbers use
    classifier_n: int = 500      # classifier robustness: held-out images per timestep bucket
    steps: str | None = None     # sampling steps of every sampling step (default: the preset's)
    seed: int = 0


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    paper_ref: str
    argv: list[str]
    files: dict[str, str] = field(default_factory=dict)  # role -> path inside the step's directory


def plan(preset, sizes: Sizes, out: Path) -> list[Step]:
    """The commands, in the order the page shows them."""
    from model_core.robustness.defaults import attack_settings

    name, seed = preset.name, str(sizes.seed)
    steps_flag = ["--steps", sizes.steps] if sizes.steps else []
    labels = ",".join(str(i) for i in range(min(preset.num_classes, 10)))
    traj_labels = ",".join(str(i) for i in range(min(preset.num_classes, 4)))
    attack = attack_settings(preset)
    pgd20 = {"eps": attack.eps, "step": round(attack.eps / 8, 6)}

    def d(key: str) -> str:
        return str(out / key)

    def classifier_cmd(key: str, extra: list[str]) -> list[str]:
        return ["evaluate-classifier", "--preset", name, "--seed", seed, "--n", str(sizes.classifier_n),
                *extra, "--out", str(out / key / "results.json")]

    return [
        Step("classifiers", "Classifier robustness under the training attack",
             "Section 5.1 (training recipe; the paper reports no robust accuracy)",
             classifier_cmd("classifiers", []), {"json": "results.json"}),
        Step("classifiers-pgd20", f"Classifier robustness under PGD-20 (L2 eps {pgd20['eps']:g}, step eps/8)",
             "issue 12's yardstick; not in the paper",
             classifier_cmd("classifiers-pgd20", ["--eps", f"{pgd20['eps']:g}", "--step-size", f"{pgd20['step']:g}",
                                                  "--attack-steps", "20"]), {"json": "results.json"}),
        Step("fig2", "Seed-matched images", "Figure 2",
             ["viz", "compare", "--preset", name, "--seed", seed, "--labels", labels, *steps_flag,
              "--out", d("fig2")], {"png": "compare.png", "md": "compare.md"}),
        Step("fig3", "Input gradients per timestep", "Figure 3",
             ["viz", "gradients", "--preset", name, "--seed", seed, "--heldout", str(sizes.heldout),
              "--out", d("fig3")], {"png": "gradients.png", "md": "gradients.md"}),
        Step("fig4", "Class maximisation at t = 0", "Figure 4",
             ["viz", "maximize", "--preset", name, "--seed", seed, "--heldout", str(sizes.heldout),
              "--out", d("fig4")], {"png": "maximize.png", "md": "maximize.md"}),
        Step("fig5", "Predicted final image along guided sampling", "Figure 5",
             ["viz", "trajectory", "--preset", name, "--seed", seed, "--labels", traj_labels, *steps_flag,
              "--out", d("fig5")], {"png": "trajectory.png", "md": "trajectory.md"}),
        Step("table1", "Quality: FID, precision, recall, label accuracy", "Table 1",
             ["evaluate", "--preset", name, "--seed", seed, "--guidance", "none," + ",".join(preset.networks),
              "--scales", "preset", "--per-class", str(sizes.per_class), *steps_flag, "--out", d("table1")],
             {"json": "results.json", "md": "results.md"}),
        Step("table2", "Pairwise preference by threshold (machine raters)", "Table 2",
             ["pilot", "--preset", name, "--seed", seed, "--per-class", str(sizes.pilot_per_class), *steps_flag,
              "--out", d("table2")], {"json": "stats.json", "report": "report.html"}),
    ]


def step_done(step: Step, out: Path) -> bool:
    marker = out / step.key / MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("argv") == step.argv
    except (OSError, ValueError):
        return False


def run_plan(steps: list[Step], out: Path, runner: Callable[[list[str]], int], *, progress: bool = True,
             log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run the steps not yet done; each finished step leaves its marker. Stops at the first failure."""
    from tqdm import tqdm

    from model_core.provenance import environment

    records = []
    bar = tqdm(steps, desc="replicate", unit="step", disable=not progress, position=0)
    for step in bar:
        bar.set_postfix_str(step.key)
        if step_done(step, out):
            log(f"[{step.key}] done earlier: rguide {' '.join(step.argv)}")
            records.append({"key": step.key, "skipped": True})
            continue
        (out / step.key).mkdir(parents=True, exist_ok=True)
        log(f"[{step.key}] rguide {' '.join(step.argv)}")
        start = time.time()
        rc = runner(step.argv)
        seconds = time.time() - start
        if rc != 0:
            raise RuntimeError(f"step {step.key} failed (exit {rc}): rguide {' '.join(step.argv)}")
        marker = {"argv": step.argv, "seconds": round(seconds, 1),
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "environment": environment()}
        (out / step.key / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        records.append({"key": step.key, "seconds": seconds})
    return records


# ---------------------------------------------------------------- the page

def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def _md(text: str | None) -> str | None:
    if text is None:
        return None
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table").render(text)


def _table1(pub: dict, results: dict | None, preset) -> dict | None:
    """Paper and ours in one table: rows are metrics, columns none / vanilla / robust at the preset's scales."""
    if results is None:
        return None
    rows = results["rows"]
    ours: dict[str, dict] = {}
    for method in pub["table1"]["methods"]:
        if method == "none":
            hit = next((r for r in rows if r["method"] == "none"), None)
        else:
            scale = preset.scale_for(method, None) if method in preset.classifiers else None
            hit = next((r for r in rows if r["method"] == method and scale is not None
                        and abs(r["scale"] - scale) < 1e-9), None)
        ours[method] = hit
    metrics = []
    for metric, label in (("precision", "Precision (higher is better)"), ("recall", "Recall (higher is better)"),
                          ("fid", "FID (lower is better)"), ("label_accuracy", "Label accuracy (ours only)")):
        paper_vals = pub["table1"].get(metric) or [None] * len(pub["table1"]["methods"])
        metrics.append({"label": label,
                        "paper": paper_vals,
                        "ours": [None if ours[m] is None else ours[m].get(metric) for m in pub["table1"]["methods"]],
                        "fmt": "{:.2f}" if metric == "fid" else "{:.3f}"})
    scales = {m: (None if ours[m] is None or m == "none" else ours[m]["scale"]) for m in ours}
    n = next((r.get("n_fake") for r in rows if r), None)
    return {"methods": pub["table1"]["methods"], "metrics": metrics, "scales": scales, "n_images": n}


def _table2(pub: dict, stats: dict | None) -> dict | None:
    if stats is None:
        return None
    a, b = stats["methods"]["a"], stats["methods"]["b"]
    rows = []
    for i, x in enumerate(pub["table2"]["thresholds"]):
        mine = next((r for r in stats["thresholds"] if abs(r["threshold"] - x) < 1e-9), None)
        rows.append({"threshold": x,
                     "paper": [pub["table2"]["robust"][i], pub["table2"]["vanilla"][i], pub["table2"]["none"][i]],
                     "ours": None if mine is None else [mine["percent"].get("robust"), mine["percent"].get("vanilla"),
                                                        mine["percent"]["none"]],
                     "p": None if mine is None else mine.get("sign_test_p")})
    return {"rows": rows, "methods": (a, b), "n_pairs": stats["n_pairs"], "n_answers": stats["n_answers"],
            "answer_shares": stats["answer_shares"], "primary": stats["primary"],
            "paper_pairs": pub["table2"]["n_pairs"], "paper_answers": pub["table2"]["n_answers"],
            "paper_shares": pub["table2"]["answer_shares"]}


def build_page(steps: list[Step], out: Path, preset, sizes: Sizes) -> Path:
    """Write OUT/index.html from whatever steps have finished (the others are listed as not run)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    from app.stats.report import TEMPLATES
    from model_core.provenance import environment
    from rguide.cmd_evaluate import classifier_table

    pub = paper()
    sections = []
    for step in steps:
        d = out / step.key
        done = step_done(step, out)
        marker = json.loads((d / MARKER).read_text()) if done else None
        sec: dict[str, Any] = {"step": step, "done": done, "marker": marker, "command": "rguide " + " ".join(step.argv),
                               "png": None, "html": None, "table1": None, "table2": None, "report": None}
        if done:
            if "png" in step.files and (d / step.files["png"]).is_file():
                sec["png"] = f"{step.key}/{step.files['png']}"
            if step.key.startswith("classifiers"):
                res = json.loads((d / step.files["json"]).read_text())
                sec["html"] = _md(classifier_table(res["results"]))
            elif step.key == "table1":
                sec["table1"] = _table1(pub, json.loads((d / "results.json").read_text()), preset)
                sec["html"] = _md(_read(d / "results.md"))
            elif step.key == "table2":
                sec["table2"] = _table2(pub, json.loads((d / "stats.json").read_text()))
                sec["report"] = f"{step.key}/report.html"
            elif "md" in step.files:
                sec["html"] = _md(_read(d / step.files["md"]))
        sections.append(sec)
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]),
                      undefined=StrictUndefined)
    html = env.get_template("replicate.html").render(
        preset=preset, sizes=sizes, sections=sections, paper=pub, environment=environment(),
        generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    page = out / "index.html"
    page.write_text(html)
    return page
