"""The catalogue of real datasets: cards, the keep rule, and `lawforge datasets fetch` served by a
local HTTP server on 127.0.0.1 (no network)."""

import dataclasses
import functools
import hashlib
import http.server
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lawforge.cli import main
from lawforge.datasets import get_card, load_dataset
from lawforge.datasets.catalogue import CATALOGUE, SourceFile, fetch
from lawforge.errors import DatasetError

EXTERNAL = Path(os.environ.get("LAWFORGE_DATA", "")) / "external"
needs_catalogue = pytest.mark.skipif(not all((EXTERNAL / n / "data.csv").is_file() for n in CATALOGUE),
                                     reason="catalogue data not found (LAWFORGE_DATA/external/<name>/data.csv)")


@pytest.fixture
def serve():
    """serve(folder) -> base URL of an HTTP server on 127.0.0.1 for that folder; stopped after the test."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAWFORGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "catalogue"


def test_every_catalogue_dataset_has_a_card():
    for name in CATALOGUE:
        card = get_card(name)
        assert card.data == {"source": "catalogue", "task": name}
        assert card.human_laws and card.citation and card.provenance
        assert all(f.trend or f.role == "hyperparameter" for f in card.features)


@needs_catalogue
def test_catalogue_splits_as_the_cards_say():
    sizes = {"steplaw_moe": (533, 175), "gemstones": (665, 105), "olmo_ladder": (250, 20), "openclip": (24, 5),
             "porian_resolving": (1189, 189), "obsscaling": (538, 302)}
    for name, (n_train, n_test) in sizes.items():
        ds = load_dataset(name)
        assert (ds.train.n, ds.test.n) == (n_train, n_test), name
    # the keep rules: no warmup-dominated point (D < N) in porian, no TruthfulQA in obsscaling
    ds = load_dataset("porian_resolving")
    assert (ds.train.X["D"] >= ds.train.X["N"]).all() and len(ds.train.group_names) == 15
    assert "TruthfulQA" not in load_dataset("obsscaling").train.group_names


@needs_catalogue
def test_fetch_from_a_mirror_checks_the_pinned_hash(serve, cache, monkeypatch):
    base = serve(EXTERNAL)
    path = fetch("olmo_ladder", mirror=base)
    assert path == cache / "olmo_ladder" / "data.csv"
    assert path.read_bytes() == (EXTERNAL / "olmo_ladder" / "data.csv").read_bytes()
    # the card now finds its data in the cache, with no data directory
    monkeypatch.delenv("LAWFORGE_DATA")
    assert load_dataset("olmo_ladder").test.n == 20


@needs_catalogue
def test_a_tampered_table_is_refused_and_nothing_is_written(serve, cache, tmp_path):
    bad = tmp_path / "mirror" / "openclip"
    bad.mkdir(parents=True)
    text = (EXTERNAL / "openclip" / "data.csv").read_text()
    (bad / "data.csv").write_text(text.replace("0.4288", "0.4289", 1))
    with pytest.raises(DatasetError, match="openclip/data.csv.*(hash|SHA256)"):
        fetch("openclip", mirror=serve(tmp_path / "mirror"))
    assert not (cache / "openclip" / "data.csv").exists()


def _steplaw_source(table: Path, out: Path) -> None:
    df = pd.read_csv(table)
    src = df.rename(columns={"bsz": "bs", "N_active": "Na", "experts": "nume", "loss": "smooth loss",
                             "loss_raw": "loss"}).assign(seq_len=2048).sample(frac=1, random_state=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    src.to_csv(out, index=False)


def _gemstones_source(table: Path, out: Path) -> None:
    g = pd.read_csv(table)
    src = pd.DataFrame({"run_name": [f"PyGemma-{w}x{d}_pretrain" for w, d in zip(g.width, g.depth)],
                        "step": g.D // (2048 * 2048), "width": g.width, "depth": g.depth,
                        "params_active_precise": g.N, "tokens": g.D, "final_loss": g.loss}).sample(frac=1, random_state=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    src.to_json(out, orient="records", lines=True)


def _obsscaling_source(table: Path, out: Path) -> None:
    """The wide source: one row per model, a column per benchmark; with the two metadata errors
    PROVENANCE.txt fixes put back, and a model without FLOPs (dropped by the build)."""
    t = pd.read_csv(table)
    wide = t.pivot_table(index=["model", "family", "N", "D", "C"], columns="benchmark", values="score",
                         aggfunc="first").reset_index()
    src = pd.DataFrame({"Model": wide["model"], "Model Family": wide["family"], "Model Size (B)": wide["N"] / 1e9,
                        "Pretraining Data Size (T)": wide["D"] / 1e12, "FLOPs (1E21)": wide["C"] / 1e21})
    for b in ("MMLU", "ARC-C", "HellaSwag", "Winograd", "TruthfulQA", "GSM8K", "XWinograd", "HumanEval"):
        src[b] = wide[b]
    btlm, llama = src["Model"] == "cerebras/btlm-3b-8k-base", src["Model"] == "openlm-research/open_llama_7b_v2"
    assert btlm.sum() == 1 and llama.sum() == 1
    src.loc[btlm, ["Pretraining Data Size (T)", "FLOPs (1E21)"]] = [627.0, 11286.0]
    src.loc[llama, ["Model Size (B)", "FLOPs (1E21)"]] = [13.0, 78.0]
    extra = src.iloc[:1].assign(**{"Model": "mistralai/Mistral-7B-v0.1", "Model Family": "Mistral",
                                   "Pretraining Data Size (T)": np.nan, "FLOPs (1E21)": np.nan})
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.concat([src, extra]).sample(frac=1, random_state=2).to_csv(out, index=False)


def _openclip_source(table: Path, out: Path) -> None:
    """zeroshot_results.csv (ImageNet rows, plus rows the build leaves out: other downstream
    sets, OpenAI's CLIP-WIT), arch_info.csv and trained_models_info.csv."""
    t = pd.read_csv(table)
    size = {8e7: "LAION-80M", 4e8: "LAION-400M", 2e9: "LAION-2B"}
    names = [f"Model-{a}_Data-{size[d]}_Samples-{s}.pt" for a, d, s in zip(t.arch, t.data_size, t.samples_seen)]
    z = pd.DataFrame({"arch": t.arch, "samples_seen": t.samples_seen.astype(float), "gmacs_total": t.compute,
                      "gmacs": t.gmacs, "upstream_dataset": t.data_size.map(size), "downstream_dataset": "imagenet1k",
                      "acc1": 1 - t.error, "name": names})
    others = pd.concat([z.assign(downstream_dataset="vtab", acc1=0.4),
                        z.iloc[:3].assign(upstream_dataset="CLIP-WIT", name="openai")])
    root = out.parent
    root.mkdir(parents=True, exist_ok=True)
    pd.concat([z, others]).sample(frac=1, random_state=3).to_csv(root / "zeroshot_results.csv", index=False)
    arch = t.drop_duplicates("arch")[["arch", "gmacs"]].rename(columns={"arch": "model"})
    pd.concat([arch, pd.DataFrame({"model": ["RN50"], "gmacs": [9.12]})]).to_csv(root / "arch_info.csv", index=False)
    pd.DataFrame({"name": names, "arch": t.arch}).to_csv(root / "trained_models_info.csv", index=False)


def _olmo_source(table: Path, out: Path) -> None:
    """The 27 W&B histories: per run a few rows, the task's bpb on the last 5 (earlier rows off
    by 1, so only the last 5 may count), MMLU as its four subgroups; the 13B history without a
    token count (D from its step), the 7B one a single row."""
    t = pd.read_csv(table)
    size = {190354176: "190M", 371262464: "370M", 758220288: "760M", 1279395840: "1B", 3169537280: "3B"}
    keys = {"hellaswag_val_5shot": "hellaswag_val", "arc_easy_test_5shot": "arc_easy_test",
            "arc_challenge_test_5shot": "arc_challenge_test", "piqa_val_5shot": "piqa_val", "csqa_val_5shot": "csqa_val",
            "openbookqa_test_5shot": "openbookqa_test", "socialiqa_val_5shot": "socialiqa_val",
            "winogrande_val_5shot": "winogrande_val", "boolq_val_5shot": "boolq_val"}
    if (out.parent / "peteish13_eval_final.csv").is_file():   # all 27 made at the first call
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    for N, runs in t.groupby("N"):
        for k, (D, run) in enumerate(sorted(runs.groupby("D"), key=lambda x: x[0])):
            if N in size:
                fname, n = f"{size[N]}-{('0.5', '1', '2', '5', '10')[k]}xC.csv", 8
            else:
                fname, n = ("peteish7_eval_anneal.csv", 1) if N < 1e10 else ("peteish13_eval_final.csv", 6)
            bpb = dict(zip(run.task, run.bpb))
            h = pd.DataFrame({"_step": np.arange(1, n + 1) * (D // 8388608) // n})
            if N != 13202396160:
                h["throughput/total_tokens"] = np.arange(1, n + 1) * D // n
            late = np.arange(n) >= n - 5
            for task, key in keys.items():
                h[f"eval/downstream_bpb/{key}_rc_5shot_bpb"] = np.where(late, bpb[task], bpb[task] + 1)
            for sub in ("stem", "humanities", "social_sciences", "other"):
                h[f"eval/downstream_bpb/mmlu_{sub}_test_rc_5shot_bpb"] = np.where(late, bpb["mmlu_avg_test_5shot"], 9.0)
            h.to_csv(out.parent / fname, index=False)


@needs_catalogue
@pytest.mark.parametrize("name,make", [("steplaw_moe", _steplaw_source), ("gemstones", _gemstones_source),
                                       ("obsscaling", _obsscaling_source), ("openclip", _openclip_source),
                                       ("olmo_ladder", _olmo_source)])
def test_fetch_rebuilds_the_table_from_its_sources(name, make, serve, cache, tmp_path):
    """The sources here are made from the tidy table (the real ones are not held), so their own
    hashes are replaced; the rebuilt table must still have the pinned hash, byte for byte."""
    e = CATALOGUE[name]
    root = tmp_path / "github"
    files = []
    for f in e.files:
        p = root / e.repo / e.commit / f.path
        make(EXTERNAL / name / "data.csv", p)
        files.append(SourceFile(f.path, hashlib.sha256(p.read_bytes()).hexdigest()))
    spec = dataclasses.replace(e, files=tuple(files))
    path = fetch(name, base_url=serve(root), spec=spec)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == e.data_sha256
    # a source that differs from its pinned hash is refused before anything is built
    wrong = dataclasses.replace(e, files=(SourceFile(e.files[0].path, "0" * 64),))
    with pytest.raises(DatasetError, match="hash|SHA256"):
        fetch(name, base_url=serve(root), spec=wrong, force=True)


def test_fetch_errors_are_clear(serve, cache, tmp_path):
    with pytest.raises(DatasetError, match="unknown catalogue dataset 'gemstone'.*gemstones"):
        fetch("gemstone")
    with pytest.raises(DatasetError, match="not implemented.*--mirror"):
        fetch("porian_resolving")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"cannot download http://127\.0\.0\.1:\d+/obsscaling/data\.csv"):
        fetch("obsscaling", mirror=serve(tmp_path / "empty"))


@needs_catalogue
def test_cli_fetch(serve, cache, capsys):
    assert main(["datasets", "fetch", "gemstones", "--mirror", serve(EXTERNAL)]) == 0
    assert "gemstones" in capsys.readouterr().out and (cache / "gemstones" / "data.csv").is_file()
    assert main(["datasets", "fetch"]) != 0
    assert "name the dataset" in capsys.readouterr().err


def test_a_validation_carve_of_one_row_is_a_clear_error(tmp_path):
    """A corner carve that holds a single run cannot rank laws (R2 undefined): one clear error at
    the start, not a crash in the middle of the search."""
    from lawforge.datasets.loader import SealedDataset

    rng = np.random.default_rng(0)
    a = np.repeat([1.0, 2.0, 4.0, 8.0], 3)
    b = np.tile([10.0, 20.0, 40.0], 4) * (1 + rng.uniform(0, 0.01, 12))  # no two runs share b exactly
    path = tmp_path / "runs.csv"
    pd.DataFrame({"a": a, "b": b, "y": 1 + 1 / a + 1 / b}).to_csv(path, index=False)
    (tmp_path / "card.yaml").write_text(
        "name: corner\nfeatures: [a, b]\ntargets: [y]\nsplit: {file: runs.csv, test: 'a >= 8'}\n"
        "data: {source: path}\nvalidation: {axis: [a, b]}\n")
    ds = load_dataset(tmp_path / "card.yaml")
    with pytest.raises(DatasetError, match="validation carve .* holds 1 row"):
        SealedDataset(ds)
