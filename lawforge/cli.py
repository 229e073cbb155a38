"""The ``lawforge`` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
from typing import Any, Sequence

from lawforge._version import __version__
from lawforge.errors import ConfigError, LawforgeError, yaml_problem
from lawforge.search import usable_cores
from lawforge.search.settings import FINAL_RESTARTS


def _seed(text: str) -> int:
    """``--seed``: a whole number >= 0 (the random generators take no negative seed)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {v}")
    return v


def _json_default(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _clean(o):
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


#: With --json, standard output carries the JSON alone: anything else a command or a library
#: prints there (Ray's worker notices, for one) goes to standard error instead.
_JSON_OUT: list = []


def _print_json(obj) -> None:
    print(json.dumps(_clean(obj), default=_json_default), file=_JSON_OUT[-1] if _JSON_OUT else sys.stdout)


def _fmt(x, digits: int = 5) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if not math.isfinite(x):
            return "nan"
        return f"{x:.{digits}f}" if abs(x) < 1e4 and (abs(x) >= 1e-3 or x == 0) else f"{x:.4g}"
    return str(x)


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], width: int | None = None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[escape(_fmt(v)) for v in r])
    Console(width=width or max(100, len(columns) * 14)).print(t)


# ------------------------------------------------------------------------------ commands
def _load(args):
    """The dataset named on the command line: a bundled name, a card path, or --csv FILE."""
    from lawforge.datasets import load_dataset

    if getattr(args, "csv", None):
        if args.dataset:
            raise ConfigError(f"give a dataset name or --csv, not both (got {args.dataset!r} and --csv)")
        if not args.features or not args.target:
            raise ConfigError("--csv needs --features a,b[,c] and --target y (and --test \"RULE\")")
        from lawforge.datasets.byo import load_csv_dataset

        return load_csv_dataset(args.csv, args.features, args.target, args.test, group=args.group,
                                validation_axis=args.validation_axis, hyperparameters=args.hyperparameters,
                                name=args.name, decreasing=args.decreasing, increasing=args.increasing,
                                log_features=args.log_features)
    if not args.dataset:
        raise ConfigError("give a dataset (a bundled name or a card path; see 'lawforge datasets') or --csv FILE")
    for flag in ("features", "target", "test", "group"):
        if getattr(args, flag, None):
            raise ConfigError(f"--{flag} applies to --csv only")
    return load_dataset(args.dataset, args.data_dir)


def cmd_datasets(args) -> int:
    from lawforge.datasets import bundled_card_paths, data_available, get_card, load_dataset

    if args.action == "fetch":
        return _fetch_dataset(args)
    if args.name:
        raise ConfigError(f"unexpected argument {args.name!r}; to download a dataset: lawforge datasets fetch NAME")
    rows = []
    for name in bundled_card_paths():
        card = get_card(name)
        avail = data_available(card, args.data_dir)
        n_rows = groups = None
        if avail:
            try:
                ds = load_dataset(card, args.data_dir, allow_download=False)
                n_rows, groups = f"{ds.train.n}/{ds.test.n}", len(ds.train.group_names)
            except LawforgeError as exc:
                avail = f"error: {exc}"
        rows.append({"dataset": name, "rows": n_rows, "groups": groups,
                     "features": card.feature_columns, "targets": card.target_columns,
                     "param_limit": card.param_limit, "available": avail})
    if args.json:
        _print_json(rows)
    else:
        _table("Datasets (rows = train/test)", ["dataset", "rows", "groups", "features", "targets", "limit", "data here"],
               [[r["dataset"], r["rows"], r["groups"], ", ".join(r["features"]), ", ".join(r["targets"]),
                 r["param_limit"] if r["param_limit"] is not None else "none",
                 "yes" if r["available"] is True else ("no" if r["available"] is False else r["available"])]
                for r in rows], width=150)
    return 0


def _fetch_dataset(args) -> int:
    from lawforge.datasets.catalogue import CATALOGUE, GITHUB_RAW, fetch, sha256_file

    if not args.name:
        raise ConfigError(f"name the dataset to fetch: one of {', '.join(CATALOGUE)}")
    path = fetch(args.name, mirror=args.mirror, base_url=args.source_url or GITHUB_RAW, force=args.force)
    info = {"dataset": args.name, "path": str(path), "sha256": sha256_file(path)}
    if args.json:
        _print_json(info)
    else:
        print(f"{args.name}: {path} (sha256 {info['sha256'][:16]}..., verified)")
    return 0


def _parse_params(spec: str | None):
    if spec is None:
        return None
    import yaml

    try:
        val = yaml.safe_load(spec)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--params is not valid YAML: {yaml_problem(exc)}") from None
    if not isinstance(val, dict):
        raise ConfigError("--params must be a mapping like '{A: {init: 100, bounds: [0, .inf]}, E: 1.5}'")
    return val


def _print_score(score, args, fitted_note: str = "") -> None:
    law = score.law
    if args.json:
        row = score.row()
        row["train_nmse"] = score.train.to_dict()["nmse"]
        row["params"] = score.params
        row["latex"] = law.to_latex()
        if score.fit_result is not None:
            row["fit"] = score.fit
            row["groups_status"] = {g: gf.status for g, gf in score.fit_result.groups.items()}
        _print_json(row)
        return
    print(f"dataset: {score.dataset}")
    print(f"law: {law.name}: {law.to_string()}  ({law.n_params} parameters per group)")
    print(f"constants: {score.fit}{fitted_note}")
    _table("Metrics", ["split", "R2", "NMSE", "NMAE", "rows", "status"],
           [["train", score.train.r2, score.train.nmse, score.train.nmae, score.train.n, score.train.status],
            ["test", score.test.r2, score.test.nmse, score.test.nmae, score.test.n, score.test.status]])
    names = law.param_names
    rows = []
    for g, vals in score.params.items():
        st = score.fit_result.groups[g].status if score.fit_result else ""
        rows.append([g] + [vals.get(n) for n in names] + ([st] if st else []))
    _table("Constants per group", ["group"] + names + (["status"] if score.fit_result else []), rows)
    if getattr(args, "latex", False):
        print(law.to_latex())


def cmd_fit(args) -> int:
    from lawforge.laws.law import law_from_text
    from lawforge.fitting.scoring import score_human, score_refit

    if args.human == bool(args.law):
        raise ConfigError("give exactly one of --law EXPR or --human")
    if args.fit and not args.human:
        raise ConfigError("--fit applies to --human only (a --law is always fitted on train)")
    ds = _load(args)
    fit_kw = dict(restarts=args.restarts, seed=args.seed, device=args.device, max_iter=args.max_iter,
                  loss=args.loss)
    if args.human:
        score = score_human(ds, args.fit or "published", data_dir=args.data_dir, **fit_kw)
    else:
        law = law_from_text(args.law, ds.card.variables, ds.card.target_columns,
                            _parse_params(args.params), name="user law")
        score = score_refit(ds, law, **fit_kw)
    note = f" (fitted on train, {args.restarts} restarts, seed {args.seed})" if score.fit == "refit" else ""
    _print_score(score, args, note)
    return 0


def cmd_bench(args) -> int:
    from lawforge.datasets import bundled_card_paths, data_available, get_card, load_dataset
    from lawforge.fitting.scoring import score_human

    if args.laws != "human":
        raise ConfigError(f"--laws must be 'human' (the only law set so far), got {args.laws!r}")
    modes = ["published", "refit"] if args.fit == "both" else [args.fit]
    if args.datasets:
        names = [n.strip() for n in args.datasets.split(",") if n.strip()]
        explicit = True
    else:
        names = list(bundled_card_paths())
        explicit = False
    rows = []
    for name in names:
        card = get_card(name)
        if not card.human_laws:
            continue
        if not data_available(card, args.data_dir) and not explicit:
            print(f"skipping {name}: its data is not available here (see 'lawforge datasets')", file=sys.stderr)
            continue
        ds = load_dataset(card, args.data_dir)
        for mode in modes:
            _, h = card.human_law()
            if mode == "published" and not h.published:
                continue
            s = score_human(ds, mode, data_dir=args.data_dir, restarts=args.restarts, seed=args.seed,
                            device=args.device, max_iter=args.max_iter)
            rows.append(s.row())
    if args.json:
        _print_json(rows)
    else:
        _table("Human laws (test R2, SLDBench protocol)", ["dataset", "law", "fit", "R2", "NMSE", "NMAE", "params"],
               [[r["dataset"], r["law"], r["fit"], r["r2"], r["nmse"], r["nmae"], r["n_params"]] for r in rows])
    return 0


def _llm_config(args):
    if not getattr(args, "llm_base_url", None):
        if getattr(args, "llm_model", None):
            raise ConfigError("--llm-model needs --llm-base-url")
        return None
    from lawforge.agent.llm import LLMConfig

    return LLMConfig(base_url=args.llm_base_url, model=args.llm_model or "", rate=args.llm_rate,
                     timeout_s=args.llm_timeout, max_retries=args.llm_retries, max_calls=args.llm_max_calls,
                     max_tokens=args.llm_max_tokens, max_cost=args.llm_max_cost,
                     price_in_per_1k=args.llm_price_in, price_out_per_1k=args.llm_price_out,
                     prompt_file=args.llm_prompt, cache_dir=args.llm_cache, replay_only=args.llm_replay)


def _print_summary(s, args) -> int:
    if s.get("stopped") == "interrupted":
        print(f"interrupted after {s['evaluations']} evaluations; checkpoint saved. Continue with: "
              f"lawforge resume {s['run_dir']}", file=sys.stderr)
        if args.json:
            _print_json(s)
        return 130
    if args.json:
        _print_json(s)
        return 0
    print(f"dataset: {s['dataset']}   evaluations: {s['evaluations']} in {s['seconds']}s ({s['stopped']})")
    if s.get("timings"):
        print("stages: " + ", ".join(f"{k} {v:.1f}s" for k, v in s["timings"].items())
              + (f"; wall {s['wall_s']:.1f}s" if "wall_s" in s else ""))
    if s.get("inferred_trends"):
        print("trends inferred from train (recorded in the run's card.yaml; --decreasing/--increasing override):")
        for text in s["inferred_trends"].values():
            print(f"  {text}")
    ref = s.get("reference") or {}
    if ref.get("chosen") == "reference":
        print(f"the reference law is returned: the best discovered form was not better on validation in "
              f"{ref['keep_share']:.0%} of bootstrap resamples ({ref['found_better_share']:.0%})")
    elif ref.get("law"):
        print(f"reference law: {ref['law']}; the discovered law beat it on validation in "
              f"{ref['found_better_share']:.0%} of bootstrap resamples" + (f" ({ref['why_not']})" if ref.get("why_not") else ""))
    print(f"law: {s['law']}   ({s['n_params']} parameters per group)")
    _table("Chosen law", ["val R2 (search)", "test R2", "test NMSE", "test NMAE"],
           [[s["val_r2"], s["test_r2"], s["test_nmse"], s["test_nmae"]]])
    if s.get("llm"):
        led = s["llm"]
        print(f"LLM: {led['calls']} calls, {led['tokens_in']} tokens in, {led['tokens_out']} out, cost {led['cost']:.4f}, "
              f"{led['laws_valid']} valid laws, {led['laws_invalid']} invalid")
    if getattr(args, "latex", False):
        from lawforge.runs.folder import LAW, RunFolder

        print(RunFolder.open(s["run_dir"]).read_json(LAW)["latex"])
    print(f"run folder: {s['run_dir']}")
    return 0


def _device(name: str) -> str:
    """``--device``: cpu, cuda or auto; cuda with no GPU in sight is a clear error now, not mid-run."""
    if name == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: torch sees no CUDA device (use --device auto to fall back to the CPU)")
    return name


def _search_config(args, budget: float | None):
    from lawforge.search.settings import SearchConfig, parse_settings

    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    settings = {"validation.replicates": args.replicates, "selection.rule": args.select,
                "fitting.device": _device(args.device), **parse_settings(args.set)}
    ray = getattr(args, "ray", None)
    if args.workers is not None:
        workers = args.workers
    else:
        workers = 0 if ray else usable_cores()  # with Ray: one actor per CPU of the cluster
    return SearchConfig.build(max_evals=args.max_evals, budget_s=budget, seed=args.seed, workers=workers, ray=ray,
                              **settings)


def cmd_discover(args) -> int:
    from lawforge.outputs import run_hooks
    from lawforge.progress import Progress
    from lawforge.runs.discover import discover
    from lawforge.search.settings import parse_budget

    budget = parse_budget(args.budget)
    if budget is None and args.max_evals is None:
        budget = 300.0
    cfg = _search_config(args, budget)
    llm = _llm_config(args)
    ds = _load(args)
    with Progress(budget_s=budget, max_evals=args.max_evals, verbose=args.verbose, quiet=args.json) as prog:
        s = discover(ds, cfg, args.out, engine=args.engine, progress=prog.update, data_dir=args.data_dir,
                     report=not args.no_report, llm=llm, handle_sigint=True, hooks=run_hooks(not args.no_report))
    return _print_summary(s, args)


def cmd_resume(args) -> int:
    from lawforge.datasets import load_dataset
    from lawforge.datasets.card import read_card
    from lawforge.outputs import run_hooks
    from lawforge.progress import Progress
    from lawforge.runs.discover import discover
    from lawforge.runs.folder import CARD, RunFolder
    from lawforge.search.settings import config_of_run

    run = RunFolder.open(args.run_dir)
    conf = run.config()
    cfg = config_of_run(conf)
    if args.workers:
        cfg.workers = args.workers
    llm = None
    if conf.get("llm"):
        from lawforge.agent.llm import LLMConfig

        llm = LLMConfig(**conf["llm"])
    data_dir = args.data_dir or conf.get("data_dir")
    ds = load_dataset(read_card(run.file(CARD)), data_dir)
    report = conf.get("report", True)
    with Progress(budget_s=cfg.budget.seconds, max_evals=cfg.budget.max_evals, verbose=args.verbose,
                  quiet=args.json) as prog:
        s = discover(ds, cfg, run.path, engine=conf.get("engine", "native"), progress=prog.update, data_dir=data_dir,
                     report=report, llm=llm, resume=True, handle_sigint=True, hooks=run_hooks(report))
    return _print_summary(s, args)


def cmd_campaign(args) -> int:
    from lawforge.datasets import bundled_card_paths, data_available, get_card
    from lawforge.outputs import run_hooks
    from lawforge.runs.campaign import run_campaign
    from lawforge.search.settings import parse_budget, parse_settings

    if args.all == bool(args.datasets):
        raise ConfigError("give dataset names or --all (not both)")
    if args.all:
        names = [n for n in bundled_card_paths() if data_available(get_card(n), args.data_dir)]
    else:
        names = list(args.datasets)
        for n in names:
            get_card(n)  # unknown names fail now, with a did-you-mean
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
    budget = parse_budget(args.budget)
    if budget is None and args.max_evals is None:
        budget = 600.0
    llm = _llm_config(args)

    def on_row(r):
        if not args.json:
            r2 = r.get("test_r2")
            print(f"  {r['dataset']} seed {r['seed']}: {r['status']}"
                  + (f", test R2 {r2:.4f}, {r['evaluations']} evals, {r['seconds']}s" if r2 is not None else ""),
                  file=sys.stderr, flush=True)

    out = run_campaign(names, args.seeds, args.out, budget_s=budget, max_evals=args.max_evals,
                       data_dir=args.data_dir, llm=llm, workers=args.workers, report=not args.no_report, on_row=on_row,
                       inner=args.inner,
                       search={"fitting.device": _device(args.device), **parse_settings(args.set)},
                       hooks=run_hooks(not args.no_report), ray=args.ray)
    if args.json:
        _print_json(out)
    else:
        print(open(out["leaderboard_md"]).read())
        print(f"leaderboard: {out['leaderboard_csv']}  {out['leaderboard_md']}")
    return 0 if all(r["status"] == "ok" for r in out["rows"]) else 1


def cmd_report(args) -> int:
    from lawforge.outputs.report import write_report

    formats = ["html", "md"] if args.format == "both" else [args.format]
    out = write_report(args.run_dir, formats=formats)
    if args.json:
        _print_json(out)
    else:
        for k, v in out.items():
            print(f"{k}: {v}")
    return 0


def cmd_settings(args) -> int:
    from lawforge.search.settings import setting_fields, settings_markdown

    if args.markdown:
        print(settings_markdown(), end="")
    elif args.json:
        _print_json([{"setting": k, "type": t, "default": d, "doc": doc} for k, t, d, doc in setting_fields()])
    else:
        _table("Search settings (--set KEY=VALUE)", ["setting", "type", "default", "what it does"],
               [[k, t, json.dumps(d), doc] for k, t, d, doc in setting_fields()], width=160)
    return 0


def cmd_rules(args) -> int:
    from lawforge.search.reference import all_rules, rules_doc

    if args.markdown:
        print(rules_doc(), end="")
    elif args.json:
        _print_json([{"id": r.id, "kind": r.kind, "stages": list(r.stages), "title": r.title, "doc": r.doc,
                      "keeps": r.keeps, "breaks": r.breaks, "setting": r.setting} for r in all_rules()])
    else:
        _table("The readable-law contract's rules (docs/rules.md)", ["id", "kind", "stages", "rule"],
               [[r.id, r.kind, ", ".join(r.stages), r.title] for r in all_rules()], width=160)
    return 0


def cmd_doctor(args) -> int:
    from lawforge.doctor import run_checks

    checks = run_checks(llm_base_url=args.llm_base_url, data_dir=args.data_dir)
    if args.json:
        _print_json(checks)
    else:
        _table("lawforge doctor", ["check", "status", "detail"],
               [[c["check"], c["status"], c["detail"]] for c in checks], width=140)
    return 1 if any(c["status"] == "FAIL" for c in checks) else 0


# ------------------------------------------------------------------------------ parser
def _common_options() -> dict[str, argparse.ArgumentParser]:
    """Option groups several commands share (argparse parents)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", help="directory with the benchmark data (<task>/train.csv, "
                        "test.csv); default: $LAWFORGE_DATA")
    common.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    common.add_argument("--json", action="store_true", help="print JSON instead of tables")

    fitopts = argparse.ArgumentParser(add_help=False)
    fitopts.add_argument("--restarts", type=int, default=FINAL_RESTARTS,
                         help=f"random restarts per group (default {FINAL_RESTARTS})")
    fitopts.add_argument("--seed", type=_seed, default=0)
    fitopts.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    fitopts.add_argument("--max-iter", type=int, default=200, help="LM iterations (default 200)")
    return {"common": common, "fit": fitopts, "csv": _csv_options(), "llm": _llm_options()}


def _csv_options() -> argparse.ArgumentParser:
    csvopts = argparse.ArgumentParser(add_help=False)
    g = csvopts.add_argument_group("your own CSV (instead of a dataset name)")
    g.add_argument("--csv", help="a CSV file with one row per run")
    g.add_argument("--features", help="comma-separated feature columns, e.g. N,D")
    g.add_argument("--target", help="target column(s), e.g. loss")
    g.add_argument("--group", help="column whose values are groups (parameters fitted per group)")
    g.add_argument("--test", help='rule selecting the held-out rows, e.g. "N >= 1e9 or D >= 6e11"')
    g.add_argument("--validation-axis", help="feature(s) along which validation is carved from train "
                   "(default: the features the --test rule reads)")
    g.add_argument("--hyperparameters", help="features that are training hyperparameters (lr, batch size)")
    g.add_argument("--decreasing", help="features along which the target is known to fall beyond the data "
                   "(e.g. N,D for a loss); forms that turn up there are rejected")
    g.add_argument("--increasing", help="features along which the target is known to rise")
    g.add_argument("--log-features", metavar="COL:BASE", help="features that already hold a log, with its base "
                   "(10, 2 or e), e.g. log_flops:10; read as the log of a quantity and pushed by log factors")
    g.add_argument("--name", help="dataset name for the run (default: the file's stem)")
    return csvopts


def _llm_options() -> argparse.ArgumentParser:
    llmopts = argparse.ArgumentParser(add_help=False)
    g = llmopts.add_argument_group("LLM mutation (optional; any OpenAI-compatible endpoint, key from OPENAI_API_KEY)")
    g.add_argument("--llm-base-url", help="e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--llm-model", help="model name sent to the endpoint")
    g.add_argument("--llm-rate", type=float, default=0.2, help="fraction of proposals from the LLM (default 0.2)")
    g.add_argument("--llm-timeout", type=float, default=30.0, help="seconds per request (default 30)")
    g.add_argument("--llm-retries", type=int, default=3, help="retries on 429/5xx/timeout (default 3)")
    g.add_argument("--llm-max-calls", type=int, default=100, help="hard limit on requests (default 100)")
    g.add_argument("--llm-max-tokens", type=int, default=500_000, help="hard limit on tokens (default 500000)")
    g.add_argument("--llm-max-cost", type=float, default=None, help="hard limit on cost (with --llm-price-*)")
    g.add_argument("--llm-price-in", type=float, default=0.0, help="price per 1k prompt tokens")
    g.add_argument("--llm-price-out", type=float, default=0.0, help="price per 1k completion tokens")
    g.add_argument("--llm-prompt", help="a prompt template file overriding the packaged one")
    g.add_argument("--llm-cache", help="reply cache folder (default <run>/llm_cache)")
    g.add_argument("--llm-replay", action="store_true", help="use cached replies only (offline replay)")
    return llmopts


_SET_HELP = ("override a search setting, e.g. --set shared_params=false --set validation.folds=1 "
             "(repeatable; 'lawforge settings' lists them)")


def _add_fit(sub, o) -> None:
    sp = sub.add_parser("fit", parents=[o["common"], o["fit"], o["csv"]], help="fit a law on a dataset and score it")
    sp.add_argument("dataset", nargs="?", help="a bundled dataset name or the path of a card (.yaml)")
    sp.add_argument("--law", help="expression, e.g. 'E + A/N**alpha + B/D**beta', or "
                    "'name = expr; target = expr' statements")
    sp.add_argument("--params", help="parameter specs as YAML, e.g. '{A: {init: 100, bounds: [0, .inf]}}'")
    sp.add_argument("--human", action="store_true", help="use the dataset's human law")
    sp.add_argument("--fit", choices=["published", "refit"], help="with --human: published constants "
                    "(default) or a refit on train")
    sp.add_argument("--loss", choices=["l2", "huber"], default="l2")
    sp.add_argument("--latex", action="store_true", help="also print the law in LaTeX")
    sp.set_defaults(func=cmd_fit)


def _add_discover(sub, o) -> None:
    sp = sub.add_parser("discover", parents=[o["common"], o["csv"], o["llm"]], help="search for a law (no LLM needed)")
    sp.add_argument("dataset", nargs="?", help="a bundled dataset name or the path of a card (.yaml)")
    sp.add_argument("--budget", help="wall-clock budget such as 60s, 5m (default 5m unless --max-evals)")
    sp.add_argument("--max-evals", type=int, help="stop after this many candidate evaluations "
                    "(with --seed, gives the same law on the CPU)")
    sp.add_argument("--seed", type=_seed, default=0)
    sp.add_argument("--engine", choices=["native", "pysr"], default="native")
    sp.add_argument("--workers", type=int, default=None,
                    help="worker processes for fitting (default: the cores this process may use); "
                         "the same seed and --max-evals give the same law with any number")
    sp.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu",
                    help="where candidate fits run (auto: a GPU when torch sees one; default cpu)")
    sp.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                    help="fit candidates on a Ray cluster: ADDRESS, or alone for a running cluster "
                         "(RAY_ADDRESS, 'ray start') or else a local Ray (pip install 'lawforge[ray]'); "
                         "--workers actors (default: one per CPU of the cluster)")
    sp.add_argument("--replicates", choices=["mean", "rows"], default="mean",
                    help="rows with the same group and features: averaged into one per design point "
                         "(mean, default) or each kept (rows)")
    sp.add_argument("--select", choices=["shift", "stable", "score"], default="shift",
                    help="final choice: among the top 20 forms by validation score (within 2x the "
                         "best), the one whose extrapolation moves least when the validation rows join "
                         "its fit (shift, default; 'stable' is its former name), or the best validation "
                         "score (score)")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)
    sp.add_argument("--out", help="run folder (default runs/<dataset>-<time>-s<seed>)")
    sp.add_argument("--verbose", action="store_true", help="print progress even when not on a terminal")
    sp.add_argument("--latex", action="store_true", help="also print the chosen law in LaTeX")
    sp.add_argument("--no-report", action="store_true", help="do not write report.html/report.md")
    sp.set_defaults(func=cmd_discover)


def _add_campaign(sub, o) -> None:
    sp = sub.add_parser("campaign", parents=[o["common"], o["llm"]],
                        help="discoveries over datasets x seeds, with a leaderboard")
    sp.add_argument("datasets", nargs="*", help="dataset names or card paths")
    sp.add_argument("--all", action="store_true", help="every bundled dataset whose data is here")
    sp.add_argument("--seeds", type=int, default=3)
    sp.add_argument("--budget", help="per run, e.g. 1m, 10m (default 10m unless --max-evals)")
    sp.add_argument("--max-evals", type=int, help="per run")
    sp.add_argument("--workers", type=int, help="runs in parallel (default: the machine's cores; with --ray, "
                    "as many as the cluster takes)")
    sp.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                    help="run each (dataset, seed) as a Ray task: ADDRESS, or alone for a running cluster "
                         "(RAY_ADDRESS, 'ray start') or else a local Ray (pip install 'lawforge[ray]')")
    sp.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu",
                    help="where candidate fits run (auto: a GPU when torch sees one; default cpu)")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)
    sp.add_argument("--out", help="campaign folder (default runs/campaign-<time>)")
    sp.add_argument("--no-report", action="store_true", help="skip the per-run reports")
    sp.add_argument("--inner", action="store_true",
                    help="score each run on its inner holdout (train's largest-scale rows play the test split), "
                         "to compare settings without reading the real test split")
    sp.set_defaults(func=cmd_campaign)


def _add_data_commands(sub, o) -> None:
    sp = sub.add_parser("datasets", parents=[o["common"]], help="list the known datasets, or fetch a catalogue dataset",
                        description="Without arguments: the known datasets and whether their data is here. "
                                    "'lawforge datasets fetch NAME': download a catalogue dataset from its public "
                                    "source at the pinned commit, check its sha256 and cache it.")
    sp.add_argument("action", nargs="?", choices=["fetch"], help="fetch a catalogue dataset")
    sp.add_argument("name", nargs="?", help="the catalogue dataset to fetch")
    sp.add_argument("--mirror", metavar="URL", help="fetch the tidy table from a mirror (URL/NAME/data.csv) instead "
                                                    "of rebuilding it from the sources; same pinned sha256")
    sp.add_argument("--source-url", metavar="URL", help="base URL for the sources (default: "
                                                        "https://raw.githubusercontent.com)")
    sp.add_argument("--force", action="store_true", help="download again even if the cache holds the table")
    sp.set_defaults(func=cmd_datasets)
    sp = sub.add_parser("bench", parents=[o["common"], o["fit"]], help="score a set of laws over datasets")
    sp.add_argument("--laws", default="human", help="law set to score (default: human)")
    sp.add_argument("--fit", choices=["published", "refit", "both"], default="both")
    sp.add_argument("--datasets", help="comma-separated dataset names (default: all with data here)")
    sp.set_defaults(func=cmd_bench)


def _add_run_commands(sub, o) -> None:
    sp = sub.add_parser("resume", parents=[o["common"]], help="continue an interrupted discovery from its checkpoint")
    sp.add_argument("run_dir", help="the run folder of the interrupted run")
    sp.add_argument("--workers", type=int, help="worker processes (default: as the run was started)")
    sp.add_argument("--verbose", action="store_true", help="print progress even when not on a terminal")
    sp.set_defaults(func=cmd_resume)
    _add_campaign(sub, o)
    sp = sub.add_parser("report", parents=[o["common"]], help="write the HTML/Markdown report of a run folder")
    sp.add_argument("run_dir", help="a run folder written by 'lawforge discover'")
    sp.add_argument("--format", choices=["html", "md", "both"], default="both")
    sp.set_defaults(func=cmd_report)
    sp = sub.add_parser("rules", parents=[o["common"]], help="list the readable-law contract's rules")
    sp.add_argument("--markdown", action="store_true", help="print the reference as Markdown (docs/rules.md)")
    sp.set_defaults(func=cmd_rules)
    sp = sub.add_parser("settings", parents=[o["common"]], help="list the search settings --set takes")
    sp.add_argument("--markdown", action="store_true", help="print the table as Markdown (docs/settings.md)")
    sp.set_defaults(func=cmd_settings)
    sp = sub.add_parser("doctor", parents=[o["common"]], help="check the installation, devices, engines and data")
    sp.add_argument("--llm-base-url", default=None, help="an OpenAI-compatible endpoint to check "
                    "(default: $LAWFORGE_LLM_BASE_URL or $OPENAI_BASE_URL if set)")
    sp.set_defaults(func=cmd_doctor)


def cmd_predict(args) -> int:
    from lawforge.runs.predict import fmt, load_run_laws, parse_points, predict_run

    rl = load_run_laws(args.run_dir, args.data_dir)
    points = parse_points(args.at, args.points, rl.law)
    res = predict_run(rl, points, args.group, args.level, args.resamples, args.seed)
    if args.csv:
        from lawforge.fileio import atomic_write

        atomic_write(args.csv, res.to_csv(index=False))
    if args.json:
        _print_json({"law": rl.law.to_string(), **res.attrs, "points": res.to_dict(orient="records")})
        return 0
    lvl = f"{args.level:.0%}"
    print(f"law: {rl.law.to_string()}   ({lvl} bands; parameter: {res.attrs['resamples']} bootstrap refits; "
          f"model: {res.attrs['laws']} top laws)")
    feats = list(rl.law.variables.values())
    for r in res.to_dict(orient="records"):
        at = ", ".join(f"{c}={fmt(r[c])}" for c in feats)
        print(f"  {r['target']} at {at}: {fmt(r['prediction'])}  parameter [{fmt(r['low'])}, {fmt(r['high'])}]  "
              f"model [{fmt(r['model_low'])}, {fmt(r['model_high'])}]  combined [{fmt(r['combined_low'])}, "
              f"{fmt(r['combined_high'])}]  observed [{fmt(r['observed_low'])}, {fmt(r['observed_high'])}]"
              + (f"  ensemble {fmt(r['ensemble'])}" if "ensemble" in r else ""))
    for n in res.attrs["notes"]:
        print(f"  note: {n}")
    if args.csv:
        print(f"written: {args.csv}")
    return 0


def cmd_optimum(args) -> int:
    from lawforge.runs.predict import fmt, frontier_run, load_run_laws, optimum_run, parse_over

    rl = load_run_laws(args.run_dir, args.data_dir)
    fixed = _fixed_values(args.fix)
    if args.over:
        out = frontier_run(rl, args.constraint, parse_over(args.over), args.group, fixed, args.level,
                           args.resamples, args.seed)
    else:
        out = optimum_run(rl, args.constraint, args.group, fixed, args.level, args.resamples, args.seed)
    if args.plot:
        if not args.over:
            raise ConfigError("--plot draws the frontier: give --over LOW:HIGH too")
        from lawforge.fileio import atomic_write_bytes
        from lawforge.outputs.report import frontier_png

        atomic_write_bytes(args.plot, frontier_png(out))
    if args.json:
        _print_json(out)
        return 0
    print(f"law: {out['law']}   constraint: {out['constraint']}")
    if args.over:
        print(f"{'budget':>10} {out['free'] + '*':>12} {out['solved'] + '*':>12} {'loss':>10}")
        target = rl.law.target_names[0]
        for r in out["frontier"]:
            print(f"{fmt(r['budget']):>10} {fmt(r[out['free']]):>12} {fmt(r[out['solved']]):>12} {fmt(r[target]):>10}")
        for k, e in out["exponents"].items():
            band = out["exponent_bands"].get(k)
            extra = f"  ({out['level']:.0%} band [{band[0]:.4f}, {band[1]:.4f}])" if band else ""
            print(f"  {k}* ~ budget^{e:.4f}{extra}")
        return 0
    for k, v in out["optimum"].items():
        band = out["bands"].get(k)
        extra = f"  ({out['level']:.0%} band [{fmt(band[0])}, {fmt(band[1])}])" if band else ""
        print(f"  {k} = {fmt(v)}{extra}")
    if out["refits_without_optimum"]:
        print(f"  note: {out['refits_without_optimum']} of {out['refits']} bootstrap refits have no interior optimum")
    return 0


def _fixed_values(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--fix {item!r}: expected NAME=VALUE")
        k, v = (s.strip() for s in item.split("=", 1))
        try:
            out[k] = float(v)
        except ValueError:
            raise ConfigError(f"--fix {item!r}: {v!r} is not a number") from None
    return out


def _add_predict_commands(sub, o) -> None:
    band = argparse.ArgumentParser(add_help=False)
    band.add_argument("run_dir", help="a finished run folder")
    band.add_argument("--group", help="the group whose constants to use (when the law is fitted per group)")
    band.add_argument("--level", type=float, default=0.9, help="band level (default 0.9)")
    band.add_argument("--resamples", type=int, default=200, help="bootstrap refits (default 200)")
    band.add_argument("--seed", type=_seed, default=0)
    sp = sub.add_parser("predict", parents=[o["common"], band],
                        help="the run's law at new points, with parameter, model, combined and observed bands")
    sp.add_argument("--at", help='points: "N=7e10,D=1.4e12" (several separated by ";")')
    sp.add_argument("--points", metavar="FILE", help="points from a CSV with a column per feature")
    sp.add_argument("--csv", metavar="FILE", help="also write the predictions to this CSV")
    sp.set_defaults(func=cmd_predict)
    sp = sub.add_parser("optimum", parents=[o["common"], band],
                        help="the allocation minimising the run's law under a constraint, with bands")
    sp.add_argument("--constraint", required=True, help='e.g. "6*N*D = 1e24" (features by symbol or column)')
    sp.add_argument("--over", metavar="LOW:HIGH[:POINTS]", help="the frontier over budgets (the constraint's "
                    "right side), e.g. 1e21:1e25, with its fitted exponents")
    sp.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                    help="a value for a feature the constraint does not tie")
    sp.add_argument("--plot", metavar="FILE.png", help="with --over: draw the frontier to this PNG")
    sp.set_defaults(func=cmd_optimum)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lawforge", description="Automated scaling-law discovery.")
    p.add_argument("--version", action="version", version=f"lawforge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    o = _common_options()
    _add_data_commands(sub, o)
    _add_fit(sub, o)
    _add_discover(sub, o)
    _add_run_commands(sub, o)
    _add_predict_commands(sub, o)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if not getattr(args, "json", False):
            return args.func(args)
        _JSON_OUT.append(sys.stdout)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                return args.func(args)
        finally:
            _JSON_OUT.pop()
    except LawforgeError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # unexpected: one line unless --debug
        if args.debug:
            raise
        print(f"error: internal error ({type(exc).__name__}: {exc}); rerun with --debug for the "
              f"traceback", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
