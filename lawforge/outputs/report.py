"""Reports of a run folder: a self-contained HTML page, its Markdown twin, and ``laws.tex``.

``lawforge report RUN_DIR`` rebuilds the page from the files of the run (config, card, law,
candidates, Pareto front, top laws) and the dataset it names; the page shows the chosen law in
LaTeX (rendered and as source), its constants per group, one plot per group of the train
points, the held-out test points and the law through the extrapolation region beside the human
law, the Pareto front, residuals, the top candidates, and the run's settings, time and LLM spend.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lawforge.errors import ConfigError, LawforgeError
from lawforge.fitting.defaults import RANK_RESTARTS
from lawforge.outputs.latex import fmt_number
from lawforge.runs.folder import PREDICTIONS_TEX, REPORT_HTML, REPORT_MD, RunFolder

log = logging.getLogger(__name__)
MAX_GROUP_PANELS = 12
#: Bootstrap refits and level of the bands drawn in the report and its predictions table.
REPORT_RESAMPLES, REPORT_LEVEL = 100, 0.9
#: Under a deadline, the seconds kept for the plots and the writing after the bootstrap.
PLOTS_S = 4.0


# ------------------------------------------------------------------------------ loading a run
def load_run(run_dir: str | Path) -> dict[str, Any]:
    """What the page needs from a run folder (see :meth:`lawforge.runs.folder.RunFolder.load`)."""
    return RunFolder.open(run_dir).load()


def _dataset_for(run) -> Any:
    from lawforge.datasets.card import read_card
    from lawforge.datasets.loader import load_dataset

    card = read_card(run["dir"] / "card.yaml")
    return load_dataset(card, run["config"].get("data_dir"))


# ------------------------------------------------------------------------------ plots
def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _axis_column(card) -> str:
    ax = card.validation.get("axis")
    if isinstance(ax, list):
        ax = ax[0]
    return ax or card.feature_columns[0]


def _group_plot(ds, law, params, human, human_params, axis: str, tcol: int, boot=None) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lawforge.fitting.lm import predict

    groups = ds.train.group_names[:MAX_GROUP_PANELS]
    n = len(groups)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    one_feature = len(ds.card.feature_columns) == 1
    positive = bool(np.all(ds.train.X[axis] > 0))
    tname = ds.card.target_columns[tcol]
    for k, g in enumerate(groups):
        a = axes[k // cols][k % cols]
        tr = ds.train.select(ds.train.groups == g)
        te = ds.test.select(ds.test.groups == g) if ds.test.n else None
        a.scatter(tr.X[axis], tr.y[:, tcol], s=14, c="0.55", label="train")
        if te is not None and te.n:
            a.scatter(te.X[axis], te.y[:, tcol], s=22, c="tab:red", marker="D", label="test (held out)")
        if one_feature:
            lo = tr.X[axis].min()
            hi = max(tr.X[axis].max(), te.X[axis].max() if te is not None and te.n else tr.X[axis].max())
            grid = (np.geomspace(lo, hi * 1.5, 200) if positive and lo > 0 else np.linspace(lo, hi + 0.2 * (hi - lo), 200))
            from lawforge.datasets.loader import DataSplit

            gs = DataSplit("grid", {axis: grid}, np.zeros((len(grid), len(ds.card.target_columns))),
                           np.full(len(grid), g, dtype=object), [g], ds.card.target_columns)
            with np.errstate(all="ignore"):
                a.plot(grid, predict(law, params, gs)[:, tcol], c="tab:blue", lw=2, label="lawforge")
                if boot is not None:
                    from lawforge.fitting.bootstrap import interval

                    lo_b, hi_b = interval(boot.predictions(gs)[:, :, tcol], REPORT_LEVEL)
                    a.fill_between(grid, lo_b, hi_b, color="tab:blue", alpha=0.15, lw=0,
                                   label=f"{REPORT_LEVEL:.0%} band")
                if human is not None and g in human_params:
                    a.plot(grid, predict(human, human_params, gs)[:, tcol], c="tab:orange", lw=1.5, ls="--",
                           label="human law")
        else:
            both = tr if te is None or not te.n else _concat(tr, te)
            with np.errstate(all="ignore"):
                pl = predict(law, params, both)[:, tcol]
                a.scatter(both.X[axis], pl, s=16, facecolors="none", edgecolors="tab:blue", label="lawforge")
                if human is not None and g in human_params:
                    ph = predict(human, human_params, both)[:, tcol]
                    a.scatter(both.X[axis], ph, s=10, marker="x", c="tab:orange", label="human law")
        if te is not None and te.n:
            a.axvspan(te.X[axis].min(), te.X[axis].max(), color="tab:red", alpha=0.06)
        if positive:
            a.set_xscale("log")
        a.set_title(str(g)[:40], fontsize=9)
        a.set_xlabel(axis, fontsize=8)
        a.set_ylabel(tname, fontsize=8)
        a.tick_params(labelsize=7)
        if k == 0:
            a.legend(fontsize=7)
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.tight_layout()
    return _png(fig)


def frontier_png(out: dict) -> bytes:
    """The compute-optimal frontier of ``lawforge optimum --over`` (free* and solved* against the
    budget, log-log, with the fitted exponents in the legend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = [r["budget"] for r in out["frontier"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, style in ((out["free"], "o-"), (out["solved"], "s--")):
        e = out["exponents"][k]
        band = out["exponent_bands"].get(k)
        extra = f" [{band[0]:.3f}, {band[1]:.3f}]" if band else ""
        ax.plot(budgets, [r[k] for r in out["frontier"]], style, label=f"{k}* ∝ C^{e:.3f}{extra}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"budget C ({out['constraint'].split('=')[0].strip()} = C)")
    ax.set_ylabel("optimal allocation")
    ax.set_title(f"compute-optimal frontier ({out['group']})", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _concat(a, b):
    from lawforge.datasets.loader import DataSplit

    X = {k: np.concatenate([a.X[k], b.X[k]]) for k in a.X}
    return DataSplit("both", X, np.concatenate([a.y, b.y]), np.concatenate([a.groups, b.groups]),
                     list(dict.fromkeys(a.group_names + b.group_names)), a.target_columns)


def _pareto_plot(run) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def clip(v) -> float:  # log axis: keep the plotted errors finite and positive
        return float(min(max(float(v), 1e-12), 1e6))

    ok = [c for c in run["candidates"] if c.get("status") == "ok" and c.get("val_nmse") is not None
          and math.isfinite(float(c["val_nmse"]))]
    if not ok:
        return None
    fig, a = plt.subplots(figsize=(6, 3.8))
    a.scatter([c["complexity"] for c in ok], [clip(c["val_nmse"]) for c in ok], s=6, c="0.7",
              label=f"candidates ({len(ok)} fitted)")
    front = sorted((r for r in run["pareto"] if math.isfinite(float(r["val_nmse"]))),
                   key=lambda r: float(r["complexity"]))
    if front:
        a.plot([float(r["complexity"]) for r in front], [clip(r["val_nmse"]) for r in front],
               "o-", c="tab:blue", label="Pareto front")
    a.set_yscale("log")
    a.set_xlabel("complexity (expression nodes)")
    a.set_ylabel("validation NMSE")
    a.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _residual_plot(ds, law, params, axis: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lawforge.fitting.lm import predict

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for split, c, lab in ((ds.train, "0.5", "train"), (ds.test, "tab:red", "test")):
        if not split.n:
            continue
        with np.errstate(all="ignore"):
            p = predict(law, params, split)
        a.scatter(split.X[axis], (p - split.y)[:, 0], s=8, c=c, label=lab)
        b.scatter(split.y.ravel(), p.ravel(), s=8, c=c, label=lab)
    a.axhline(0, c="k", lw=0.8)
    if np.all(ds.train.X[axis] > 0):
        a.set_xscale("log")
    a.set_xlabel(axis)
    a.set_ylabel("prediction − observed")
    a.set_title("residuals", fontsize=9)
    lo = float(np.nanmin(ds.train.y))
    hi = float(np.nanmax(ds.train.y))
    b.plot([lo, hi], [lo, hi], c="k", lw=0.8)
    b.set_xlabel("observed")
    b.set_ylabel("predicted")
    b.set_title("parity", fontsize=9)
    a.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _latex_png(latex: str) -> bytes | None:
    """The law rendered with matplotlib's mathtext (no TeX install needed); None if it can't."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [ln.strip() for ln in latex.split("\\\\") if ln.strip()]
    try:
        fig = plt.figure(figsize=(min(16, 0.09 * max(len(ln) for ln in lines) + 2), 0.6 * len(lines) + 0.2))
        for i, ln in enumerate(lines):
            fig.text(0.01, 1 - (i + 0.6) / len(lines), f"${ln}$", fontsize=15, va="center")
        return _png(fig)
    except (ValueError, RuntimeError) as exc:  # mathtext cannot parse everything sympy prints
        log.debug("mathtext failed: %s", exc)
        plt.close("all")
        return None


# ------------------------------------------------------------------------------ the page
def _human(ds, data_dir):
    """The card's human law refit on train (for the plots and the comparison), or (None, {})."""
    if not ds.card.human_laws:
        return None, {}, {}
    from lawforge.fitting.scoring import score_human

    out = {}
    law = params = None
    for mode in ("published", "refit"):
        try:
            s = score_human(ds, mode, data_dir=data_dir, restarts=RANK_RESTARTS)
        except LawforgeError as exc:
            log.debug("human law %s: %s", mode, exc)
            continue
        out[mode] = s.test.r2 if ds.test.n else None
        if mode == "refit" or params is None:
            law, params = s.law, s.params
    return law, params or {}, out


def build_report(run_dir: str | Path, dataset=None, deadline: float | None = None) -> dict[str, Any]:
    """Everything the page shows: text fields, tables and PNG images (bytes). With ``deadline``
    (a :func:`time.perf_counter` time), the bands' bootstrap refits only as many resamples as
    should end :data:`PLOTS_S` before it (the page says how many), and none when that time has
    already passed (the page says so; ``lawforge report RUN_DIR`` draws them)."""
    from lawforge.laws.law import law_from_text

    run = load_run(run_dir)
    ds = dataset if dataset is not None else _dataset_for(run)
    card = ds.card
    lj = run["law"]
    law = law_from_text(lj["expression"], card.variables, card.target_columns, name="lawforge")
    params = lj["params"]
    axis = _axis_column(card)
    human, hparams, hscores = _human(ds, run["config"].get("data_dir"))
    def safe(fn, *a):  # one plot that cannot be drawn must not cost the page
        try:
            return fn(*a)
        except (ValueError, OverflowError, RuntimeError, TypeError) as exc:
            log.warning("plot %s skipped: %s: %s", fn.__name__, type(exc).__name__, exc)
            import matplotlib.pyplot as plt

            plt.close("all")
            return None

    by = None if deadline is None else deadline - PLOTS_S
    skipped = by is not None and time.perf_counter() >= by   # the run's time budget is spent
    boot, beyond = (None, []) if skipped else _bands(ds, run, law, params, axis, by)
    images = {"law": safe(_latex_png, lj["latex"])}
    for j, t in enumerate(card.target_columns[:5]):
        images[f"groups_{t}"] = safe(_group_plot, ds, law, params, human, hparams, axis, j, boot)
    images["pareto"] = safe(_pareto_plot, run)
    images["residuals"] = safe(_residual_plot, ds, law, params, axis)
    ok = sorted((c for c in run["candidates"] if c.get("status") == "ok" and c.get("val_r2") is not None),
                key=lambda c: -c["val_r2"])
    statuses: dict[str, int] = {}
    for c in run["candidates"]:
        statuses[c.get("status", "?")] = statuses.get(c.get("status", "?"), 0) + 1
    return {"run": run, "dataset": ds, "law": law, "params": params, "images": images,
            "human_scores": hscores, "human_law": human, "top_candidates": ok[:10], "statuses": statuses,
            "beyond": beyond, "axis": axis, "refits": boot.requested if boot is not None else REPORT_RESAMPLES,
            "bands_skipped": skipped}


def _bands(ds, run, law, params, axis: str, deadline: float | None = None):
    """The chosen law's bootstrap (for the bands) and its predictions beyond the data; (None, [])
    when they cannot be computed (the page is written without them)."""
    from lawforge.fitting.bootstrap import bootstrap
    from lawforge.runs.predict import final_split, prediction_table

    try:
        train = final_split(ds, run["config"])
        boot = bootstrap(law, train, params, REPORT_RESAMPLES, seed=0, restarts=2,  # fitted constants + init
                         deadline=deadline)
        return boot, prediction_table(law, params, boot, train, axis, REPORT_LEVEL)
    except (LawforgeError, ValueError, KeyError, RuntimeError) as exc:
        log.warning("prediction bands skipped: %s: %s", type(exc).__name__, exc)
        return None, []


def _img_md(name: str) -> str:
    return f"report_files/{name}.png"


def render_markdown(rep) -> str:
    run, m, lj, cfg = rep["run"], rep["run"]["metrics"], rep["run"]["law"], rep["run"]["config"]
    law = rep["law"]
    out = [f"# lawforge run: {m['dataset']}", "",
           f"Run folder `{run['dir']}`; engine {m.get('engine', 'native')}, seed {m.get('seed')}; "
           f"{m['evaluations']} candidates evaluated in {m['seconds']} s (stopped: {m.get('stopped')}).", "",
           "## Chosen law", ""]
    if rep["images"].get("law"):
        out += [f"![law]({_img_md('law')})", ""]
    out += ["```latex", lj["latex"], "```", "", f"Plain text: `{lj['expression']}` ({lj['n_params']} parameters "
            "per group, fitted separately per group).", ""]
    out += _law_notes(lj)
    out += ["| split | R² |", "|---|---|",
            f"| validation (search) | {fmt_number(m.get('val_r2'))} |", f"| train (refit) | {fmt_number(m.get('train_r2'))} |",
            f"| test (read once) | {fmt_number(m.get('test_r2'))} |"]
    for mode, r2 in rep["human_scores"].items():
        out.append(f"| human law, {mode} constants, test | {fmt_number(r2)} |")
    out += ["", "## Constants per group", "", "| group | " + " | ".join(law.param_names) + " |",
            "|---|" + "---|" * len(law.param_names)]
    for g, vals in rep["params"].items():
        out.append(f"| {g} | " + " | ".join(f"{vals.get(p, float('nan')):.6g}" for p in law.param_names) + " |")
    out += ["", "## Law against the data", "",
            "Grey: train points; red diamonds: held-out test points (shaded: the extrapolation region); "
            "blue: lawforge's law (shaded: its 90% bootstrap band, for one-feature data); orange dashed: the human "
            "law refit on the same train points."
            + (f" First {MAX_GROUP_PANELS} of {len(rep['dataset'].train.group_names)} groups."
               if len(rep["dataset"].train.group_names) > MAX_GROUP_PANELS else ""), ""]
    for k, png in rep["images"].items():
        if k.startswith("groups_"):
            out += [f"![{k}]({_img_md(k)})" if png else "(plot unavailable: see the log)", ""]
    if rep["bands_skipped"]:
        out += ["## Predictions beyond the data", "",
                "Not drawn: the run's time budget was spent before the bootstrap. `lawforge report RUN_DIR` "
                "draws them (and the plots' bands); `lawforge predict RUN_DIR` gives predictions with intervals.", ""]
    if rep["beyond"]:
        ax = rep["axis"]
        out += ["## Predictions beyond the data", "",
                f"The chosen law at 10 and 100 times the largest train value of `{ax}` (other features at their "
                f"largest train values), with {REPORT_LEVEL:.0%} bootstrap intervals ({rep['refits']} refits on "
                "resampled train points: parameter uncertainty only; `lawforge predict` adds the spread across the "
                "top laws). Also in `predictions.tex`.", "",
                f"| group | {ax} | prediction | {REPORT_LEVEL:.0%} interval |", "|---|---|---|---|"]
        for r in rep["beyond"]:
            out.append(f"| {r['group']} | {r['point'][ax]:.4g} ({r['where']}) | {r['prediction']:.4g} | "
                       f"[{r['low']:.4g}, {r['high']:.4g}] |")
        out.append("")
    if rep["images"].get("pareto"):
        out += ["## Pareto front (complexity vs validation error)", "", f"![pareto]({_img_md('pareto')})", ""]
    out += ["## Residuals", "", f"![residuals]({_img_md('residuals')})" if rep["images"].get("residuals")
            else "(plot unavailable: see the log)", "", "## Top candidates (validation)", "",
            "| # | val R² | complexity | params | origin | expression |", "|---|---|---|---|---|---|"]
    for i, c in enumerate(rep["top_candidates"]):
        out.append(f"| {i + 1} | {fmt_number(c['val_r2'])} | {c['complexity']} | {c['n_params']} | {c.get('origin', '')} | "
                   f"`{c['expr']}` |")
    if run["top"]:
        out += ["", "## Top laws refit on all train rows (laws.tex)", "", "| rank | val R² | test R² | params | law |",
                "|---|---|---|---|---|"]
        for t in run["top"]:
            out.append(f"| {t['rank'] + 1}{' (chosen)' if t.get('chosen') else ''} | {fmt_number(t.get('val_r2'))} | "
                       f"{fmt_number(t.get('test_r2'))} | {t['n_params']} | `{t['expression']}` |")
    llm = run["llm"]
    spend = ("no LLM used" if not llm else
             f"{llm.get('calls', 0)} calls, {llm.get('tokens_in', 0)} tokens in, {llm.get('tokens_out', 0)} "
             f"tokens out, cost {llm.get('cost', 0)}")
    out += ["", "## Settings", "", "| setting | value |", "|---|---|"]
    flat = {**cfg, **_flat_settings(cfg.get("settings") or {})}
    for k in ("engine", "seed", "budget.seconds", "budget_s", "budget.max_evals", "max_evals", "evolution.population",
              "population", "evolution.offspring", "offspring", "evolution.parsimony", "parsimony",
              "fitting.restarts", "restarts", "fitting.max_iter", "max_iter", "workers", "fit_rows", "validation_rows",
              "fitting.final_restarts", "final_restarts", "selection.rule"):
        if k in flat:
            out.append(f"| {k} | {flat[k]} |")
    rejected = (rep["run"].get("metrics") or {}).get("rejected_by_rule")
    out += [f"| validation | {cfg['card'].get('validation')} |", f"| candidate statuses | {rep['statuses']} |",
            *([f"| rejected by rule | {', '.join(f'{k}: {v}' for k, v in rejected.items())} |"] if rejected else []),
            f"| LLM | {spend} |", ""]
    return "\n".join(out)



def _law_notes(lj: dict) -> list[str]:
    """The chosen law's building blocks, contract and comparison with the card's law."""
    out: list[str] = []
    if lj.get("contract"):
        c = lj["contract"]
        out += [f"Building blocks: {', '.join(c['blocks']) or 'none'}. Readable-law contract: "
                + ("kept." if c["ok"] else "broken"
                   + (f" ({', '.join(c['rules'])}, docs/rules.md)" if c.get("rules") else "")
                   + ": " + "; ".join(c["reasons"][:5]) + "."), ""]
    if lj.get("incumbent"):
        inc = lj["incumbent"]
        verdict = ("the card's law was kept" if inc["chosen"] == "human" else
                   "the discovered law was kept" + (f" ({inc['why_not']})" if inc.get("why_not") else ""))
        out += [f"Against the card's law `{inc['human']}` (validation NMSE, mean of {inc['folds']} fold(s), both "
                f"refit there): discovered {fmt_number(inc['discovered_nmse'])}, card's law "
                f"{fmt_number(inc['human_nmse'])}; a discovered law must reach {inc['margin']:g}x the card's: "
                f"{verdict}.", ""]
    return out

def _flat_settings(settings: dict) -> dict:
    out = {}
    for k, v in settings.items():
        out.update({f"{k}.{k2}": v2 for k2, v2 in v.items()} if isinstance(v, dict) else {k: v})
    return out


def render_html(rep, md: str) -> str:
    """The Markdown rendered to HTML with every image embedded (one self-contained file)."""
    import markdown_it

    body = markdown_it.MarkdownIt("commonmark").enable("table").render(md)
    for name, png in rep["images"].items():
        if png:
            uri = "data:image/png;base64," + base64.b64encode(png).decode()
            body = body.replace(f'src="{_img_md(name)}"', f'src="{uri}"')
    title = html.escape(f"lawforge: {rep['run']['metrics']['dataset']}")
    css = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
           "table{border-collapse:collapse;margin:.5em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px}"
           "th{background:#f3f3f3}code,pre{background:#f6f6f6;font-size:12px}pre{padding:.6em;overflow-x:auto}"
           "img{max-width:100%}h2{border-bottom:1px solid #ddd;padding-bottom:.2em}")
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{css}</style></head><body>\n{body}</body></html>\n")


def write_report(run_dir: str | Path, dataset=None, formats: Sequence[str] = ("html", "md"),
                 deadline: float | None = None) -> dict[str, str]:
    """Write ``report.html`` (self-contained) and/or ``report.md`` (+ ``report_files/*.png``);
    ``deadline`` as in :func:`build_report`."""
    for f in formats:
        if f not in ("html", "md"):
            raise ConfigError(f"--format must be html or md, got {f!r}")
    rep = build_report(run_dir, dataset, deadline)
    run = RunFolder.open(run_dir)
    md = render_markdown(rep)
    out = {}
    if "md" in formats:
        for name, png in rep["images"].items():
            if png:
                run.write_image(name, png)
        out["md"] = str(run.write_text(REPORT_MD, md))
    if "html" in formats:
        out["html"] = str(run.write_text(REPORT_HTML, render_html(rep, md)))
    if rep["beyond"]:
        from lawforge.outputs.latex import predictions_table_tex

        out["tex"] = str(run.write_text(PREDICTIONS_TEX, predictions_table_tex(
            rep["beyond"], rep["run"]["metrics"]["dataset"], rep["axis"], REPORT_LEVEL)))
    return out


def render_png(html_path: str | Path, png_path: str | Path, width: int = 1280, height: int = 4000,
               timeout: float = 120) -> Path:
    """Render a report page with headless Chromium (Debian's ``chromium``) to a PNG, the way a
    person would see it."""
    import shutil
    import subprocess

    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        raise ConfigError("headless rendering needs Chromium (Debian: apt-get install chromium)")
    png = Path(png_path).resolve()
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--window-size={width},{height}", f"--screenshot={png}", Path(html_path).resolve().as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not png.is_file():
        raise ConfigError(f"chromium did not write {png}: {r.stderr.strip().splitlines()[-1:] or r.returncode}")
    return png
