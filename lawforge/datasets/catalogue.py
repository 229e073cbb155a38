"""The catalogue of real public scaling datasets: where each table comes from, and fetching it.

Each entry pins the public repository and commit its table was built from, the sha256 of every
source file at that commit, and the sha256 of the tidy table (``data.csv``) the dataset card
reads. :func:`fetch` works like ``sklearn.datasets.fetch_*``: it downloads the source files at the
pinned commit (through ``pooch``), checks each hash, rebuilds the table, checks the table's hash
and caches it under ``<cache>/catalogue/NAME/data.csv``. A mirror that hosts the tidy tables
(``MIRROR/NAME/data.csv``, a lab's own copy for instance) can stand in for the sources; its
tables are held to the same pinned hash.

The cards find a table in this order: ``<data-dir>/external/NAME/data.csv``,
``<data-dir>/NAME/data.csv``, then the cache. Nothing here is executed from a downloaded file:
the sources are read as CSV or JSON lines.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from lawforge.datasets.locations import catalogue_cache
from lawforge.errors import DatasetError, did_you_mean
from lawforge.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

GITHUB_RAW = "https://raw.githubusercontent.com"


@dataclass(frozen=True)
class SourceFile:
    path: str    # inside the repository
    sha256: str  # of the file at the pinned commit


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    repo: str            # owner/name on GitHub
    commit: str          # the pinned commit
    license: str
    files: tuple[SourceFile, ...]
    data_sha256: str     # of the tidy data.csv the card reads
    build: Callable[[dict[str, Path]], str] | None = None  # source paths -> data.csv text

    def url(self, f: SourceFile, base: str = GITHUB_RAW) -> str:
        return f"{base.rstrip('/')}/{self.repo}/{self.commit}/{f.path}"


def _build_steplaw_moe(paths: dict[str, Path]) -> str:
    src = pd.read_csv(paths["data/moe_lr_bs_loss.csv"])
    out = pd.DataFrame({"D": src["D"], "lr": src["lr"], "bsz": src["bs"], "N_active": src["Na"], "N": src["N"],
                        "experts": src["nume"], "topk": src["topk"], "loss": src["smooth loss"],
                        "loss_raw": src["loss"]})
    out = out.sort_values(["N_active", "D", "bsz", "lr"], kind="mergesort")
    return out.to_csv(index=False, lineterminator="\n")


def _build_gemstones(paths: dict[str, Path]) -> str:
    src = pd.read_json(paths["wandb_dfs/wandb_df_for_fitting_hot_100b+.jsonl"], lines=True)
    out = pd.DataFrame({"width": src["width"], "depth": src["depth"], "N": src["params_active_precise"],
                        "D": src["tokens"], "loss": src["final_loss"],
                        "shape": [f"w{w}_d{d}" for w, d in zip(src["width"], src["depth"])]})
    out = out.sort_values(["N", "D"], kind="mergesort")
    return out.to_csv(index=False, lineterminator="\n", float_format="%.10g")


_OBS_BENCHMARKS = ("MMLU", "ARC-C", "HellaSwag", "Winograd", "TruthfulQA", "GSM8K", "XWinograd", "HumanEval")
# Two metadata errors of the source, fixed as PROVENANCE.txt says (model -> column -> value):
# btlm-3b was trained on 627B tokens (the source says 627T), open_llama_7b_v2 is a 7B model (it
# says 13B). Their FLOPs are recomputed as 6 N D, the repository's own convention.
_OBS_FIXES = {"cerebras/btlm-3b-8k-base": ("Pretraining Data Size (T)", 0.627),
              "openlm-research/open_llama_7b_v2": ("Model Size (B)", 7.0)}


def _build_obsscaling(paths: dict[str, Path]) -> str:
    src = pd.read_csv(paths["eval_results/base_llm_benchmark_eval.csv"])
    size, data, flops = "Model Size (B)", "Pretraining Data Size (T)", "FLOPs (1E21)"
    for model, (col, value) in _OBS_FIXES.items():
        row = src["Model"] == model
        src.loc[row, col] = value
        src.loc[row, flops] = 6 * src.loc[row, size] * src.loc[row, data]
    src = src[src[flops].notna()]                 # models without a public data size
    wide = pd.DataFrame({"model": src["Model"], "family": src["Model Family"], "N": src[size] * 1e9,
                         "D": src[data] * 1e12, "C": src[flops] * 1e21})
    long = pd.concat([wide.assign(benchmark=b, score=src[b]) for b in _OBS_BENCHMARKS], ignore_index=True)
    long = long[long["score"].notna()]
    order = long["benchmark"].map({b: i for i, b in enumerate(_OBS_BENCHMARKS)})
    long = long.assign(_b=order).sort_values(["_b", "C", "model"], kind="mergesort").drop(columns="_b")
    return long.to_csv(index=False, lineterminator="\n", float_format="%.12g")


_LAION_SIZE = {"LAION-80M": 8e7, "LAION-400M": 4e8, "LAION-2B": 2e9}   # nominal unique samples


def _build_openclip(paths: dict[str, Path]) -> str:
    z = pd.read_csv(paths["zeroshot_results.csv"])
    arch = pd.read_csv(paths["arch_info.csv"])
    trained = pd.read_csv(paths["trained_models_info.csv"])
    z = z[(z["downstream_dataset"] == "imagenet1k") & z["upstream_dataset"].isin(list(_LAION_SIZE))]
    if sorted(z["name"]) != sorted(trained["name"]):
        raise ValueError(f"the ImageNet rows ({len(z)}) are not the {len(trained)} trained models of "
                         f"trained_models_info.csv")
    gmacs = z["arch"].map(dict(zip(arch["model"], arch["gmacs"])))
    if gmacs.isna().any():
        raise ValueError(f"architectures missing from arch_info.csv: {sorted(set(z['arch'][gmacs.isna()]))}")
    out = pd.DataFrame({"gmacs": gmacs, "samples_seen": z["samples_seen"],
                        "data_size": z["upstream_dataset"].map(_LAION_SIZE), "arch": z["arch"],
                        "compute": gmacs * z["samples_seen"], "error": 1 - z["acc1"]})
    out = out.sort_values(["compute", "error"], kind="mergesort")
    return out.to_csv(index=False, lineterminator="\n", float_format="%.12g")


_OLMO_DIR = "src/scripts/paper/data/ladder-runs/"
# Non-embedding parameters per model size (the repository's final.json and MODEL_PARAMS).
_OLMO_N = {"190M": 190354176, "370M": 371262464, "760M": 758220288, "1B": 1279395840, "3B": 3169537280,
           "peteish7": 6887575552, "peteish13": 13202396160}
_OLMO_TASKS = {"hellaswag_val_5shot": "hellaswag_val", "arc_easy_test_5shot": "arc_easy_test",
               "arc_challenge_test_5shot": "arc_challenge_test", "piqa_val_5shot": "piqa_val",
               "csqa_val_5shot": "csqa_val", "openbookqa_test_5shot": "openbookqa_test",
               "socialiqa_val_5shot": "socialiqa_val", "winogrande_val_5shot": "winogrande_val",
               "boolq_val_5shot": "boolq_val"}
# MMLU's bpb: the subgroups weighted as the repository's WEIGHT_BY_KEY, per row.
_OLMO_MMLU = {"mmlu_stem_test": 0.215, "mmlu_humanities_test": 0.335, "mmlu_social_sciences_test": 0.219,
              "mmlu_other_test": 0.231}
_OLMO_13B_BATCH = 8388608    # tokens per step of the 13B run (its history has no token count)
_OLMO_FILES = ([f"{size}-{mult}xC.csv" for size in ("190M", "370M", "760M", "1B", "3B")
                for mult in ("0.5", "1", "2", "5", "10")] + ["peteish7_eval_anneal.csv", "peteish13_eval_final.csv"])


def _build_olmo_ladder(paths: dict[str, Path]) -> str:
    """Per run (27 W&B histories): bpb per task as the mean of the last 5 rows (the paper's
    moving average), D from the last row's token count, N by model size; long format."""
    def col(key: str) -> str:
        return f"eval/downstream_bpb/{key}_rc_5shot_bpb"

    rows = []
    for fname in _OLMO_FILES:
        h = pd.read_csv(paths[_OLMO_DIR + fname])
        size = fname.split("-")[0] if "xC" in fname else fname.split("_")[0]
        if "throughput/total_tokens" in h:
            D = float(h["throughput/total_tokens"].iloc[-1])
        else:
            D = float(h["_step"].iloc[-1]) * _OLMO_13B_BATCH
        last = h.tail(5)
        bpb = {task: last[col(key)].mean() for task, key in _OLMO_TASKS.items()}
        bpb["mmlu_avg_test_5shot"] = sum(w * last[col(k)] for k, w in _OLMO_MMLU.items()).mean()
        if any(pd.isna(v) for v in bpb.values()):
            raise ValueError(f"{fname}: a task's bpb is missing in its last rows")
        rows += [{"N": _OLMO_N[size], "D": D, "task": t, "bpb": v} for t, v in bpb.items()]
    out = pd.DataFrame(rows).sort_values(["task", "N", "D"], kind="mergesort")
    out["D"] = out["D"].astype("int64")
    return out.to_csv(index=False, lineterminator="\n", float_format="%.10g")


# Hashes of the source files are those of PROVENANCE.txt in each dataset's folder; the table
# hashes are of the tidy tables those transformations produce.
CATALOGUE: dict[str, CatalogueEntry] = {e.name: e for e in (
    CatalogueEntry(
        "steplaw_moe", "step-law/steplaw", "32a8f4cc50247695fb56cc6c9117abdf67c97763", "unstated (cite the paper)",
        (SourceFile("data/moe_lr_bs_loss.csv", "653d585244a7b227423007e8b796bc16d76f6d24eb87b1919b8f048a91897b92"),),
        "5a23a229df5705038197f73e72dec9b7ce1cd9601c75c2f1c8f2e34d298e2b2c", _build_steplaw_moe),
    CatalogueEntry(
        "gemstones", "mcleish7/gemstone-scaling-laws", "5f420478f6057b0cbb4d13405fb10ca64675bccb", "MIT",
        (SourceFile("wandb_dfs/wandb_df_for_fitting_hot_100b+.jsonl",
                    "1da97ce3d1394e0223826c8f5ca081cb0fb289ec65d2707fb5430721e92e9659"),),
        "a3cd0e0ef7a9e513070cc0f4f197ec8734202e67add9e91476a4e0f91a175bb9", _build_gemstones),
    CatalogueEntry(
        "porian_resolving", "formll/resolving-scaling-law-discrepancies", "0dc60d91b8a525858a3067fc9e4a46ff5374cc6f",
        "MIT", (SourceFile("data/summary_df.pickle.xz", "afbf07ec92d23182f56a44dd43599f2a7e9716fd70492fbc0a35f6093272b74f"),
                SourceFile("data/summary_df_owt2.pickle.xz",
                           "7aed67d1ad9bc1d7b0518e3814cee1129216b423b4538d4b724873dd670cff30"),
                SourceFile("data/summary_df_att.pickle.xz",
                           "40218b8320817bf3c34f82c57aaa28c53ccb5feb9bb3928ee6fc70868ac22af7"),
                SourceFile("data/summary_df_kaplan_tuned_hparams.pickle.xz",
                           "09b6b91c9c6fa0e4c2684dcbed82475ee62d6c4fc60db5ca2ce5653b08f0ae55")),
        "a44b9d4920518463dc108c3d44e5cc89c5ce31efce752f43265cd2aed17b1a3c"),
    CatalogueEntry(
        "olmo_ladder", "allenai/OLMo-ladder", "67a3f440f787d020da35e3ca8eeae475fae754f5", "Apache-2.0",
        tuple(SourceFile(_OLMO_DIR + f, h) for f, h in zip(_OLMO_FILES, (
            "d4e9f80960149676352b61b739c4dca727bffee5e7a8f41919119365fcde0534",
            "8ac0066547d5edec4d05d2b861a26c7faf591eef6971e11acba2450a45e69c27",
            "db90c75f8d031d0754e7108f1a8d16f372603e0c04d2cb00cca08cf272ecf86a",
            "aefe54fa03bd158d6da178b1eb2ece88cb0681bb32403845b6e544ae9e4e5dcf",
            "192b115c3f02b6503043280f8303c59f5b10897cd631f1b8ec6aea944d22faa6",
            "04e12eec843bb7b8bf292ec8837edd8db63010469e457d145a1757d48a91bac9",
            "3597a61872596affbb61e83f36c7cc3fe43485c3ed30ba6d658064b57edcea07",
            "73c686e580ad0600ca12334bf22ab3dad3265583a948e3beaae5b79b9a20c137",
            "199905d322b0332b69f1d0a40de9be43e5eb3cf576fc1d3031578cdea09708fa",
            "3f25b4ec4035caeb71b787d165857667779dc3b92739c6379b8f8ce7079fcb58",
            "a02cee96b21c78a6a9c71ba99ead71c454fc6561e50b778681ab1d7182df6cf6",
            "a830185275c91cc077379540ec91a71b4bea6f191ca99a8090c851be19e7956d",
            "8c1ad2bf7da390b9eed24af7b6eb12a6393cc077164d51b4e4740f7221f1193c",
            "9c08b58d2625f427253bbd2079bad3a90726a66486154dd4f82ef84560e275ec",
            "e256c9df6d3b7af66bbcf4dc7ca84b45a812bd205b70648ca5177c8b74f6ff40",
            "7c44ecf10ddaeba4c5ceb26ac0db8b9454163c19903556238d3117685768126a",
            "7fe91f0552829238e591e55c03f66b743ac5931388d9710457a845d92c2d9102",
            "34ba12a08a52e10e89a71d88a5c13538c3df21e5e993c476cadb08eb4b2eb354",
            "d195153f05b846f6d4f8ca95247d1f79d9d00e898d856b244b17e20431539ddb",
            "ec7e7487c67a774d9b919ec35121966ded7ae2ce5ede135f1d32f509f451476f",
            "35247d4ff9af52c11bdec95a31e069599f43564ba6094a3893b49d91aa258410",
            "bd5dbad1b2942c58439006f77dba46ff2f66ad8760f8d709f9ced4fcb387bedb",
            "b933055d54221855c893245331770c0e7314dea5203518640da88773d92d8e47",
            "4b02c35ea9b3623402ac3a401dbc66ed827dcecede04343ea65cc2bbf6bfd962",
            "1ff388361b6d8e4548aaaaecd8a0437a21e28b9af11c4696225e322c8526e488",
            "0742d6c113aa0f9c789cf9e5745678fc6f30eb9b873a1f98068fc6f6522c85df",
            "8cbdd4c2818b05ff30476a9bd4ecae620da89193ca61183bc2d61e111a9d0059"))),
        "ec7000faace68cb0263f91193ecde3aa9f408a53f19137dfe7215609ce656fa6", _build_olmo_ladder),
    CatalogueEntry(
        "openclip", "LAION-AI/scaling-laws-openclip", "652b1e7471f7ccf372277f67cb680de5c9fa139d",
        "none stated (published results of the paper)",
        (SourceFile("zeroshot_results.csv", "a04786cfcde5d47436c8ddbca0f0bdbb39cc584c0d0776b4f99145ae430a6568"),
         SourceFile("trained_models_info.csv", "6b084d4895ed83c0dc38a8f166b6164e1a70d0bcc42c75e2aae51a86bf9f678d"),
         SourceFile("arch_info.csv", "44189a6d88685eb70a632fcf0db20e9944e7277d58c0a2d343ee9d9d6d5bcc08")),
        "c75fac8ddb6d0603feb260cc0e0e915e790a942992ef10cf903bf91d178a167c", _build_openclip),
    CatalogueEntry(
        "obsscaling", "ryoungj/ObsScaling", "4d6e1e43fd2635d04654aa77d1df9d5266ea0382", "Apache-2.0",
        (SourceFile("eval_results/base_llm_benchmark_eval.csv",
                    "511996815735a4c46251dc585dcc525e370d148201f86561e6f927f9df2d0db8"),),
        "eab57049f34ff4db0a3d45585190a043c2626a7935563894baab0d33c2e38ba6", _build_obsscaling),
)}


def entry(name: str) -> CatalogueEntry:
    if name not in CATALOGUE:
        raise DatasetError(f"unknown catalogue dataset {name!r}{did_you_mean(name, CATALOGUE)}; "
                           f"the catalogue holds {', '.join(CATALOGUE)}")
    return CATALOGUE[name]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _retrieve(url: str, sha256: str, folder: Path, fname: str) -> Path:
    import pooch  # the download, hash check and cache of one file

    pooch.get_logger().setLevel(logging.WARNING)
    try:
        return Path(pooch.retrieve(url, known_hash=f"sha256:{sha256}", fname=fname, path=folder, progressbar=False))
    except ValueError as exc:  # pooch: the hash does not match; the file is not kept
        raise DatasetError(f"{url}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # network, HTTP status, disk: one clear error naming the URL
        raise DatasetError(f"cannot download {url}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from None


def fetch(name: str, *, mirror: str | None = None, base_url: str = GITHUB_RAW, force: bool = False,
          spec: CatalogueEntry | None = None) -> Path:
    """Download catalogue dataset ``name`` into the cache and return the path of its table.

    ``mirror``: the base URL of a copy of the tidy tables (``MIRROR/NAME/data.csv``); without it
    the source files are downloaded from ``base_url``/owner/repo/commit/path and the table is
    rebuilt from them. Either way the table must have the pinned sha256. ``spec`` replaces the
    pinned entry (tests). An existing cached table with the right hash is kept unless ``force``."""
    e = spec or entry(name)
    folder = catalogue_cache(e.name)
    target = folder / "data.csv"
    folder.mkdir(parents=True, exist_ok=True)
    if target.is_file() and not force and sha256_file(target) == e.data_sha256:
        return target
    if mirror:
        got = _retrieve(f"{mirror.rstrip('/')}/{e.name}/data.csv", e.data_sha256, folder / "mirror", "data.csv")
        return atomic_write_bytes(target, got.read_bytes())
    if e.build is None:
        raise DatasetError(f"{e.name}: rebuilding its table from the sources ({e.repo} at {e.commit[:12]}) is not "
                           f"implemented in lawforge; fetch the tidy table from a mirror with --mirror URL (it is "
                           f"checked against the pinned sha256 {e.data_sha256[:16]}...), or put data.csv at "
                           f"<data-dir>/external/{e.name}/")
    paths = {f.path: _retrieve(e.url(f, base_url), f.sha256, folder / "source", f.path.replace("/", "__"))
             for f in e.files}
    try:
        text = e.build(paths)
    except (KeyError, ValueError, pd.errors.ParserError) as exc:
        raise DatasetError(f"{e.name}: cannot build the table from its sources: {type(exc).__name__}: {exc}") from None
    data = text.encode()
    got = hashlib.sha256(data).hexdigest()
    if got != e.data_sha256:
        raise DatasetError(f"{e.name}: the table built from the sources has sha256 {got[:16]}..., not the pinned "
                           f"{e.data_sha256[:16]}...; nothing was written to {target}")
    return atomic_write_bytes(target, data)
