"""A RobustBench-like robustness report for a preset's three defences (JSON + Markdown, per-sample results).

Two threat settings, always reported apart:

* **transfer**: adversarial images made once on a *surrogate* (the preset's
  vanilla classifier at t = 0, a standard non-robust classifier), then shown
  to every defence. This is the TMDC paper's protocol (its surrogate is a
  ResNet-50). It measures how well the surrogate's perturbations transfer,
  **not** the defence's white-box robustness; for the vanilla classifier
  itself the "transfer" attack is white-box.
* **whitebox** (adaptive): each defence attacked through its own exact
  gradients. The diffusion classifier's gradient is that of its scores on
  fixed (timestep, noise) draws (the first draws its prediction also uses),
  over all classes (elimination is not differentiable), or with ``eot`` an
  average over fresh draws; the attacked image is then judged by the full
  staged prediction.

Every accuracy carries its n and a Clopper-Pearson 95% interval; images are
the first n of a seeded permutation of the preset's held-out digits (indices
saved). Sanity checks (accuracy falls as eps grows, more steps do not help
the defence, transfer does not beat white-box, gradients are non-zero) are
computed and printed with the tables; a failed check is reported, not
hidden.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from model_core.robustness.threats import (ATTACKS, DEFAULT_ATTACKS, DEFENCES, GRADIENTS, NORM_LABELS, SANITY_EPS,
                                           SETTINGS, AttackSpec, model_eps, one_step_of)

SCHEMA = "rguide.robustness/1"
Progress = Callable[[str, int, int], None]   # (phase, done, total)


@dataclass
class ReportConfig:
    preset: str = "demo"
    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    settings: tuple[str, ...] = SETTINGS
    defences: tuple[str, ...] = DEFENCES
    n: int = 256
    seed: int = 0
    schedule: str | None = None          # diffusion classifier's prediction schedule (None: the demo default)
    attack_timesteps: int | None = None  # draws in the diffusion classifier's attack gradient (None: stage 1's)
    eot: bool = False                    # white-box on the diffusion classifier: fresh draws at every pass
    eot_samples: int = 1
    # Gradient estimators of the diffusion classifier's white-box rows, each its own row: "fixed" (the first
    # draws of the prediction's list) and/or "eot" (fresh draws at every pass, eot_samples passes averaged).
    # None: ("eot",) when eot is set, else ("fixed",).
    diffusion_gradients: tuple[str, ...] | None = None
    surrogate: str = "vanilla"
    # The diffusion classifier's white-box attacks cost (classes x attack_timesteps) forward+backward passes
    # per step and image; on a CPU they run on the first ``diffusion_whitebox_n`` images with at most
    # ``diffusion_whitebox_steps`` PGD steps, and AutoAttack only if asked (both stated in the report).
    diffusion_whitebox_n: int | None = None
    diffusion_whitebox_steps: int | None = None
    diffusion_whitebox_autoattack: bool = False
    sanity_n: int = 32
    sanity_eps: tuple[float, ...] = SANITY_EPS["linf"]
    sanity_eps_l2: tuple[float, ...] = SANITY_EPS["l2"]
    batch_size: int = 50
    device: str = "cpu"

    def to_dict(self) -> dict:
        return asdict(self)

    def gradients(self) -> tuple[str, ...]:
        g = tuple(self.diffusion_gradients or (("eot",) if self.eot else ("fixed",)))
        bad = [x for x in g if x not in GRADIENTS]
        if bad or not g:
            raise ValueError(f"diffusion gradients {bad or 'nothing given'}: choose from {', '.join(GRADIENTS)}")
        return tuple(dict.fromkeys(g))

    def norms(self) -> tuple[str, ...]:
        """The threat models (norms) of the attacks asked for, Linf first: the sanity checks run per norm."""
        present = {ATTACKS[a].norm for a in self.attacks}
        return tuple(n for n in ("linf", "l2") if n in present)

    def sweep(self, norm: str) -> tuple[float, ...]:
        return tuple(self.sanity_eps if norm == "linf" else self.sanity_eps_l2)



def binomial_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (exact) interval for k successes in n trials."""
    from scipy.stats import beta

    if n == 0:
        return (0.0, 1.0)
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return (lo, hi)


def _summary(correct: torch.Tensor) -> dict:
    k, n = int(correct.sum()), int(correct.numel())
    lo, hi = binomial_interval(k, n)
    return {"accuracy": k / n if n else float("nan"), "correct": k, "n": n, "ci95": [round(lo, 4), round(hi, 4)]}


def heldout_indices(n_total: int, n: int, seed: int) -> torch.Tensor:
    if n > n_total:
        raise ValueError(f"n={n} but the held-out split has only {n_total} images")
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(int(seed)))[:n]


class _Attacker:
    """Makes adversarial images for one attack spec against one differentiable model."""

    def __init__(self, cfg: ReportConfig):
        self.cfg = cfg

    def settings(self, spec: AttackSpec, steps: int | None = None, eot: int = 1) -> dict:
        eps_m = model_eps(spec.eps)
        out: dict[str, Any] = {"attack": spec.name, "kind": spec.kind, "norm": spec.norm, "eps": spec.eps,
                               "eps_model_units": eps_m, "eot_samples": eot}
        if spec.kind == "fgsm":
            out.update(steps=1, step_size=spec.eps, restarts=1)
        elif spec.kind == "pgd":
            s = steps or spec.steps
            out.update(steps=s, step_size=round(2.5 * spec.eps / s, 6), random_start=True, restarts=1)
        else:
            from model_core.robustness.autoattack_adapter import version

            out.update(version=version(), aa_version="standard",
                       attacks="apgd-ce, apgd-t, fab-t, square (standard)", seed=self.cfg.seed)
        return out

    def run(self, spec: AttackSpec, model, x, y, *, steps: int | None = None, eot: int = 1, seed: int = 0):
        from model_core.robustness.image_attacks import fgsm, pgd

        eps_m = model_eps(spec.eps)
        outs = []
        bs = self.cfg.batch_size
        for i in range(0, x.shape[0], bs):
            xb, yb = x[i:i + bs], y[i:i + bs]
            if spec.kind == "fgsm":
                outs.append(fgsm(model, xb, yb, eps=eps_m, eot=eot, norm=spec.norm))
            elif spec.kind == "pgd":
                outs.append(pgd(model, xb, yb, norm=spec.norm, eps=eps_m, steps=steps or spec.steps, eot=eot,
                                seed=seed + i))
            else:
                from model_core.robustness.autoattack_adapter import autoattack

                outs.append(autoattack(model, xb, yb, norm=spec.norm, eps01=spec.eps, seed=seed,
                                       batch_size=bs, device=self.cfg.device))
        return torch.cat(outs)


def _check_ball(x_adv, x, spec: AttackSpec) -> float:
    """Largest perturbation in the attack's norm, in [0, 1] units (must not exceed eps)."""
    d = (x_adv - x).flatten(1) / 2.0
    r = d.abs().amax(1) if spec.norm == "linf" else d.norm(dim=1)
    return float(r.max()) if r.numel() else 0.0


def _skipped(name: str, estimator: str | None, spec: AttackSpec, cfg: ReportConfig) -> str | None:
    """Why a white-box row is not run, or None."""
    if name != "diffusion" or spec.kind != "autoattack":
        return None
    if estimator == "eot":
        return ("not run: AutoAttack's standard version assumes a deterministic model; it runs through the "
                "diffusion classifier on the fixed draws only")
    if not cfg.diffusion_whitebox_autoattack:
        return ("not run: AutoAttack through the diffusion classifier costs thousands of gradient passes per "
                "image; see the report's notes")
    return None


def planned_phases(cfg: ReportConfig) -> int:
    """How many distinct progress phases :func:`run_report` announces for ``cfg`` (a job's progress total)."""
    d, specs = len(cfg.defences), [ATTACKS[a] for a in cfg.attacks]
    n = d                                                     # clean
    if "transfer" in cfg.settings:
        n += len(specs) * (1 + d)                             # craft on the surrogate, then every defence
    if "whitebox" in cfg.settings:
        for name in cfg.defences:
            for est in (cfg.gradients() if name == "diffusion" else (None,)):
                n += 2 * sum(_skipped(name, est, s, cfg) is None for s in specs)   # attack, then predict
    n += 1 + d * sum(len(cfg.sweep(m)) for m in cfg.norms())  # gradient check, eps sweeps
    return n


def _label(name: str, estimator: str | None, cfg: ReportConfig) -> str:
    if estimator is None:
        return name
    return f"{name} (fixed draws)" if estimator == "fixed" else f"{name} (EOT-{cfg.eot_samples})"


def run_report(cfg: ReportConfig, *, pipeline=None, dataset=None, progress: Progress | None = None) -> dict:
    """Measure every (setting, attack, defence) of ``cfg``; returns the report (see :func:`write_report`).

    ``progress(phase, done, total)``: each phase is announced under its own label, :func:`planned_phases` of
    them in all."""
    from model_core.data import heldout_data, load_dataset
    from model_core.pipeline import get_pipeline
    from model_core.provenance import environment
    from model_core.robustness.defences import diffusion_defence, load_defences
    from model_core.robustness.image_attacks import input_gradient

    started = time.time()
    pipe = pipeline or get_pipeline(cfg.preset, cfg.device)
    preset = pipe.preset
    specs = [ATTACKS[a] for a in cfg.attacks]
    for s in cfg.settings:
        if s not in SETTINGS:
            raise ValueError(f"setting {s!r} is unknown; choose from {SETTINGS}")
    gradients = cfg.gradients()
    first_eot = gradients[0] == "eot"
    defences = load_defences(pipe, cfg.defences, schedule=cfg.schedule, seed=cfg.seed,
                             attack_timesteps=cfg.attack_timesteps, eot=first_eot,
                             eot_samples=cfg.eot_samples if first_eot else 1)
    # White-box targets: each classifier once, the diffusion classifier once per gradient estimator.
    targets: list[tuple[str, str | None, Any]] = []
    for name, d in defences.items():
        if name != "diffusion":
            targets.append((name, None, d))
            continue
        for est in gradients:
            same = (est == "eot") == first_eot
            targets.append((name, est, d if same else diffusion_defence(
                d.attack_model.classifier, attack_timesteps=cfg.attack_timesteps, eot=est == "eot",
                eot_samples=cfg.eot_samples if est == "eot" else 1, source=d.settings["weights"])))
    eot_of = {(name, est): (cfg.eot_samples if est == "eot" else 1) for name, est, _ in targets}
    if dataset is None:
        spec_data, split = heldout_data(preset)
        ds = load_dataset(spec_data, split=split, image_size=preset.image_size, channels=preset.in_channels)
    else:
        ds, split = dataset, "given"
    idx = heldout_indices(len(ds), cfg.n, cfg.seed)
    x, y = ds.images[idx].to(cfg.device), ds.labels[idx].to(cfg.device)
    attacker = _Attacker(cfg)
    say = progress or (lambda phase, done, total: None)
    per_sample: dict[str, Any] = {"indices": idx.tolist(), "labels": y.cpu().tolist()}
    results: list[dict] = []

    def evaluate(defence, x_eval, y_eval, phase):
        total = x_eval.shape[0]
        done = [0]

        def tick(k):
            done[0] += k
            say(phase, round(done[0], 2), total)

        t0 = time.time()
        pred, _ = defence.predict(x_eval, batch_size=cfg.batch_size, progress=tick)
        return pred, time.time() - t0

    # -- clean -------------------------------------------------------------------------
    clean: dict[str, dict] = {}
    for name, d in defences.items():
        pred, secs = evaluate(d, x, y, f"clean: {name}")
        correct = pred == y.cpu()
        clean[name] = {**_summary(correct), "seconds": round(secs, 1)}
        per_sample[f"clean/{name}"] = {"pred": pred.tolist(), "correct": correct.int().tolist()}

    # -- transfer ----------------------------------------------------------------------
    crafted: dict[str, torch.Tensor] = {}   # on the surrogate; its white-box rows reuse them (same attack, seed)
    if "transfer" in cfg.settings:
        sur = defences.get(cfg.surrogate) or load_defences(pipe, (cfg.surrogate,))[cfg.surrogate]
        for spec in specs:
            say(f"transfer: crafting {spec.name} on {cfg.surrogate}", 0, 1)
            t0 = time.time()
            x_adv = attacker.run(spec, sur.attack_model, x, y, seed=cfg.seed)
            crafted[spec.name] = x_adv
            craft = time.time() - t0
            radius = _check_ball(x_adv, x, spec)
            for name, d in defences.items():
                pred, secs = evaluate(d, x_adv, y, f"transfer {spec.name}: {name}")
                correct = pred == y.cpu()
                results.append({"setting": "transfer", "surrogate": f"{cfg.surrogate} classifier at t = 0",
                                "defence": name, **attacker.settings(spec), **_summary(correct),
                                "max_perturbation": round(radius, 6), "seconds_attack": round(craft, 1),
                                "seconds_predict": round(secs, 1),
                                "note": "the surrogate itself: this row is white-box" if name == cfg.surrogate
                                else ""})
                per_sample[f"transfer/{spec.name}/{name}"] = {"pred": pred.tolist(),
                                                              "correct": correct.int().tolist()}

    # -- white-box ---------------------------------------------------------------------
    if "whitebox" in cfg.settings:
        for name, est, d in targets:
            n_wb, steps_cap = cfg.n, None
            if name == "diffusion":
                n_wb = min(cfg.n, cfg.diffusion_whitebox_n or cfg.n)
                steps_cap = cfg.diffusion_whitebox_steps
            label, eot = _label(name, est, cfg), eot_of[(name, est)]
            for spec in specs:
                extra = {"gradient_estimator": est} if est else {}
                why = _skipped(name, est, spec, cfg)
                if why:
                    results.append({"setting": "whitebox", "defence": name, **extra,
                                    **attacker.settings(spec, None, eot), "skipped": why})
                    continue
                steps = min(spec.steps, steps_cap) if (steps_cap and spec.kind == "pgd") else None
                say(f"whitebox: attacking {label} with {spec.name}", 0, 1)
                calls0 = getattr(getattr(d.attack_model, "classifier", None), "calls", 0)
                t0 = time.time()
                if name == cfg.surrogate and spec.name in crafted:
                    x_adv = crafted[spec.name]
                else:
                    x_adv = attacker.run(spec, d.attack_model, x[:n_wb], y[:n_wb], steps=steps, eot=eot,
                                         seed=cfg.seed)
                craft = time.time() - t0
                calls = getattr(getattr(d.attack_model, "classifier", None), "calls", 0) - calls0
                pred, secs = evaluate(d, x_adv, y[:n_wb], f"whitebox {spec.name}: {label}")
                correct = pred == y[:n_wb].cpu()
                row = {"setting": "whitebox", "defence": name, **extra, **attacker.settings(spec, steps, eot),
                       **_summary(correct), "clean_on_these": _summary(torch.tensor(
                           per_sample[f"clean/{name}"]["correct"][:n_wb], dtype=torch.bool)),
                       "max_perturbation": round(_check_ball(x_adv, x[:n_wb], spec), 6),
                       "seconds_attack": round(craft, 1), "seconds_predict": round(secs, 1)}
                if name == "diffusion":
                    row["gradient"] = d.settings["attack_gradient"]
                    # forward passes through the UNet (each also back-propagated once, except AutoAttack's
                    # Square queries and other forward-only evaluations)
                    row["network_evaluations_attack_per_image"] = round(calls / max(n_wb, 1))
                results.append(row)
                per_sample[f"whitebox/{spec.name}/{name}" + ("/eot" if est == "eot" else "")] = {
                    "pred": pred.tolist(), "correct": correct.int().tolist()}

    # -- sanity checks -------------------------------------------------------------------
    sanity = _sanity(cfg, targets, eot_of, attacker, x, y, results, say, input_gradient)
    report = {
        "schema": SCHEMA,
        "preset": preset.name,
        "model": {name: d.describe() for name, d in defences.items()},
        "units": "eps in [0, 1] pixel units at the native resolution (the models take [-1, 1]: model eps = 2 eps)",
        "data": {**ds.describe(), "split": split, "n": cfg.n, "index_seed": cfg.seed},
        "config": cfg.to_dict(),
        "clean": clean,
        "results": results,
        "sanity": sanity,
        "seconds": round(time.time() - started, 1),
        "provenance": {**pipe.provenance(), **environment()},
    }
    return {"report": report, "per_sample": per_sample}


def _sanity(cfg, targets, eot_of, attacker, x, y, results, say, input_gradient) -> list[dict]:
    checks: list[dict] = []
    n = min(cfg.sanity_n, x.shape[0])
    xs, ys = x[:n], y[:n]
    # 1. gradients are non-zero (every white-box gradient estimator)
    say("sanity: gradients", 0, 1)
    for name, est, d in targets:
        g = input_gradient(d.attack_model, xs, ys, eot_of[(name, est)])
        nz = (g.flatten(1).abs().amax(1) > 0).float().mean().item()
        checks.append({"check": "gradients are non-zero", "defence": _label(name, est, cfg),
                       "share_nonzero": round(nz, 4), "n": n, "passed": nz == 1.0})
    # 2. accuracy falls toward 0 as eps grows, per threat model (white-box; PGD-10 for the classifiers, the
    #    one-step attack for the diffusion classifier, with its first gradient estimator)
    sweep_targets = {}
    for name, est, d in targets:
        sweep_targets.setdefault(name, (est, d))
    for norm in cfg.norms():
        for name, (est, d) in sweep_targets.items():
            kind = "fgsm" if name == "diffusion" else "pgd"
            accs = []
            for eps in cfg.sweep(norm):
                say(f"sanity: {name} at {NORM_LABELS[norm]} eps {eps}", 0, 1)
                spec = AttackSpec(f"{kind}@{eps}", kind, norm, eps, 10 if kind == "pgd" else 1, "")
                x_adv = attacker.run(spec, d.attack_model, xs, ys, eot=eot_of[(name, est)], seed=cfg.seed)
                pred, _ = d.predict(x_adv, batch_size=cfg.batch_size)
                accs.append(round(float((pred == ys.cpu()).float().mean()), 4))
            monotone = all(b <= a + 2.0 / n for a, b in zip(accs, accs[1:]))
            one_step = "FGSM" if norm == "linf" else "FGM"
            checks.append({"check": "accuracy falls as eps grows", "defence": _label(name, est, cfg),
                           "norm": norm, "attack": f"white-box {one_step if kind == 'fgsm' else 'PGD-10'} "
                                                   f"{NORM_LABELS[norm]}",
                           "eps": list(cfg.sweep(norm)), "accuracy": accs, "n": n,
                           "passed": monotone and accs[-1] < accs[0] + 1e-9,
                           "note": "tolerance: 2 images between neighbouring radii"})
    # 3. more iterations do not raise accuracy (per threat model); 4. transfer does not beat white-box
    by = {(r["setting"], r["attack"], r["defence"], r.get("gradient_estimator")): r
          for r in results if "accuracy" in r}
    for name, est, _ in targets:
        for spec in (ATTACKS[a] for a in cfg.attacks):
            one = one_step_of(spec) if spec.kind == "pgd" else None
            f = by.get(("whitebox", one.name, name, est)) if one else None
            p = by.get(("whitebox", spec.name, name, est))
            if f and p and f["n"] == p["n"]:
                checks.append({"check": "more iterations do not raise accuracy", "defence": _label(name, est, cfg),
                               "norm": spec.norm, "one_step": one.name, "one_step_accuracy": f["accuracy"],
                               "iterative": spec.name, "iterative_accuracy": p["accuracy"], "steps": p["steps"],
                               "n": p["n"], "passed": p["accuracy"] <= f["accuracy"] + 2.0 / p["n"]})
        for spec_name in cfg.attacks:
            t, w = by.get(("transfer", spec_name, name, None)), by.get(("whitebox", spec_name, name, est))
            if t and w:
                # "beats" = leaves the defence with lower accuracy; white-box may run on fewer images
                checks.append({"check": "transfer does not beat white-box", "defence": _label(name, est, cfg),
                               "attack": spec_name, "transfer": t["accuracy"], "whitebox": w["accuracy"],
                               "n_transfer": t["n"], "n_whitebox": w["n"],
                               "passed": w["accuracy"] <= t["accuracy"] + 2.0 / w["n"]})
    bad = [r for r in results if "max_perturbation" in r and r["max_perturbation"] > r["eps"] * (1 + 1e-4) + 1e-6]
    checks.append({"check": "every adversarial image is inside its eps-ball", "passed": not bad,
                   "violations": [(r["setting"], r["attack"], r["defence"], r["max_perturbation"]) for r in bad]})
    return checks


# -- writing ---------------------------------------------------------------------------------
def _fmt(s: dict) -> str:
    return f"{100 * s['accuracy']:.1f}% [{100 * s['ci95'][0]:.1f}, {100 * s['ci95'][1]:.1f}] (n={s['n']})"


def to_markdown(report: dict) -> str:
    r = report
    lines = [f"# Robustness report: preset `{r['preset']}`", "",
             f"Units: {r['units']}. Held-out images: {r['data']['n']} of {r['data'].get('name', 'the held-out split')} "
             f"({r['data']['split']} split), the first n of a permutation seeded {r['data']['index_seed']}; "
             "accuracies with Clopper-Pearson 95% intervals.", ""]
    lines += ["## Defences", "", "| defence | what | network evaluations per prediction | per attack gradient |",
              "|---|---|---:|---:|"]
    for name, m in r["model"].items():
        what = m["summary"] + (f"; schedule `{m['schedule']}`, {m['timestep_policy']} timesteps, seed {m['seed']}"
                               if name == "diffusion" else "")
        lines.append(f"| {name} | {what} | {m['evaluations_per_image']} | {m['evaluations_per_gradient']} |")
    lines.append("")
    attacks = list(dict.fromkeys(x["attack"] for x in r["results"]))
    for setting, title in (("transfer", "Transfer attacks (black-box for every defence but the surrogate)"),
                           ("whitebox", "Adaptive white-box attacks (each defence's own gradients)")):
        rows = [x for x in r["results"] if x["setting"] == setting]
        if not rows:
            continue
        lines += [f"## {title}", ""]
        if setting == "transfer":
            lines += [f"Surrogate: {rows[0]['surrogate']}.", ""]
        lines += ["| defence | clean | " + " | ".join(attacks) + " |", "|---|---|" + "---|" * len(attacks)]
        keys = [(name, est) for name in r["model"]
                for est in (dict.fromkeys(x.get("gradient_estimator") for x in rows if x["defence"] == name)
                            or (None,))]
        for name, est in keys:
            cells = [_fmt(r["clean"][name])]
            for a in attacks:
                hit = [x for x in rows if x["defence"] == name and x["attack"] == a
                       and x.get("gradient_estimator") == est]
                if not hit:
                    cells.append("-")
                elif "skipped" in hit[0]:
                    cells.append("not run")
                else:
                    h = hit[0]
                    extra = f", {h['steps']} steps" if h["kind"] == "pgd" and h["steps"] != ATTACKS[a].steps else ""
                    c = h.get("clean_on_these")
                    if c and c["n"] != r["clean"][name]["n"]:
                        extra += f"; clean on these {c['correct']}/{c['n']}"
                    cells.append(_fmt(h) + extra)
            label = name if est is None else (f"{name}, fixed draws" if est == "fixed" else
                                              f"{name}, EOT over {r['config']['eot_samples']} draws")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Attack settings", "", "| attack | norm | eps | steps | step size | restarts | EOT | version |",
              "|---|---|---:|---:|---:|---:|---:|---|"]
    seen = set()
    for x in r["results"]:
        key = (x["attack"], x.get("steps"), x.get("eot_samples"))
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"| {x['attack']} | {x['norm']} | {x['eps']} | {x.get('steps', '-')} | {x.get('step_size', '-')} | "
                     f"{x.get('restarts', '-')} | {x.get('eot_samples', 1)} | {x.get('version', '-')} |")
    lines.append("")
    dg = [x for x in r["results"] if x["setting"] == "whitebox" and x["defence"] == "diffusion" and "gradient" in x]
    for est in dict.fromkeys(x.get("gradient_estimator") for x in dg):
        these = [x for x in dg if x.get("gradient_estimator") == est]
        g = these[0]["gradient"]
        lines += ["White-box gradient of the diffusion classifier"
                  + (f" ({'fixed draws' if est == 'fixed' else 'EOT'})" if est else "") + ": "
                  f"{g['classes']} classes x {g['timesteps']} timesteps per pass ({g['draws']}); elimination: "
                  f"{g['elimination']}. Network evaluations per attacked image (forward passes through the UNet, "
                  "each back-propagated once): "
                  + ", ".join(f"{x['attack']} {x['network_evaluations_attack_per_image']}" for x in these) + ".", ""]
    lines += ["## Sanity checks", ""]
    for c in r["sanity"]:
        detail = {k: v for k, v in c.items() if k not in ("check", "passed")}
        lines.append(f"- {'PASS' if c['passed'] else 'FAIL'}: {c['check']}: {json.dumps(detail)}")
    prov = r["provenance"]
    lines += ["", f"Seed {r['config']['seed']}; code {prov.get('code_version')}; torch {prov.get('torch')}; "
              f"{r['seconds']:.0f} s in all. Per-sample results: `per_sample.json`.", ""]
    return "\n".join(lines)


def write_report(out: dict, directory: str | Path) -> dict[str, Path]:
    from model_core.files import atomic_write_text

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = {"json": d / "report.json", "markdown": d / "report.md", "per_sample": d / "per_sample.json"}
    atomic_write_text(paths["json"], json.dumps(out["report"], indent=2, sort_keys=True, default=str) + "\n")
    atomic_write_text(paths["per_sample"], json.dumps(out["per_sample"], sort_keys=True) + "\n")
    atomic_write_text(paths["markdown"], to_markdown(out["report"]))
    return paths
