"""Synthetic scaling datasets generated from known laws with noise.

The package ships the generated CSVs (``synthetic_data/``) so they are readable without
lawforge; ``python -m lawforge.datasets.synthetic DIR`` regenerates them bit for bit (numpy's
PCG64 stream is stable), which a test checks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

#: The true laws, for tests and documentation (never used as search seeds).
TRUE_LAWS = {
    "synthetic_chinchilla": ("E + A/N**alpha + B/D**beta",
                             {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28}),
    "synthetic_data_constrained": (
        "E + A/N**alpha + B/Dp**beta, Dp = U + RD*U*(1 - exp(-(D/U - 1)/RD))",
        {"E": 1.8, "A": 480.0, "alpha": 0.35, "B": 1400.0, "beta": 0.35, "RD": 12.0}),
    "synthetic_multigroup": ("C_g + A_g/(D**alpha_g + B_g)", "per group, see GROUPS"),
    "synthetic_lr_bowl": ("E + A/N**alpha + B/D**beta + c*(log(lr) - k0 - k1*log(N))**2",
                          {"E": 1.7, "A": 400.0, "alpha": 0.34, "B": 410.0, "beta": 0.28, "c": 0.04,
                           "k0": 2.3, "k1": -0.5}),
}

MULTI_GROUPS = {
    "g1": {"A": 40.0, "alpha": 0.45, "B": 30.0, "C": 1.2},
    "g2": {"A": 15.0, "alpha": 0.35, "B": 12.0, "C": 0.9},
    "g3": {"A": 90.0, "alpha": 0.55, "B": 60.0, "C": 1.6},
    "g4": {"A": 25.0, "alpha": 0.40, "B": 5.0, "C": 2.1},
}


def chinchilla(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    _, p = TRUE_LAWS["synthetic_chinchilla"]
    rows = []
    for N in np.geomspace(2e7, 4e9, 8):
        for tpp in np.geomspace(5, 80, 6):  # tokens per parameter
            D = N * tpp
            L = p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]
            rows.append((float(f"{N:.4g}"), float(f"{D:.4g}"), L * (1 + 0.005 * rng.standard_normal())))
    return pd.DataFrame(rows, columns=["N", "D", "loss"])


def data_constrained(seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    _, p = TRUE_LAWS["synthetic_data_constrained"]
    rows = []
    for N in np.geomspace(5e7, 3e9, 6):
        for U in np.geomspace(1e9, 1e11, 5):
            for epochs in (1, 2, 4, 8, 16, 40):
                D = U * epochs
                Dp = U + p["RD"] * U * (1 - np.exp(-(D / U - 1) / p["RD"]))
                L = p["E"] + p["A"] / N ** p["alpha"] + p["B"] / Dp ** p["beta"]
                rows.append((float(f"{U:.4g}"), float(f"{N:.4g}"), float(f"{D:.4g}"),
                             L * (1 + 0.004 * rng.standard_normal())))
    return pd.DataFrame(rows, columns=["U", "N", "D", "loss"])


def multigroup(seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for g, p in MULTI_GROUPS.items():
        for D in 200 * 2.0 ** np.arange(0, 13):
            L = p["C"] + p["A"] / (D ** p["alpha"] + p["B"])
            rows.append((g, float(D), L * (1 + 0.003 * rng.standard_normal())))
    return pd.DataFrame(rows, columns=["group", "D", "loss"])


def lr_bowl(seed: int = 3) -> pd.DataFrame:
    """A learning-rate sweep at every (N, D): a Chinchilla loss plus a log-quadratic bowl whose
    optimum moves with model size (lr* = e^k0 N^k1), as Step Law and DeepSeek report."""
    rng = np.random.default_rng(seed)
    _, p = TRUE_LAWS["synthetic_lr_bowl"]
    rows = []
    for N in np.geomspace(4e7, 4e9, 7):
        for tpp in (10.0, 20.0, 40.0):  # tokens per parameter
            D = N * tpp
            for lr in np.geomspace(3e-5, 1e-2, 8):
                N_, D_, lr_ = float(f"{N:.4g}"), float(f"{D:.4g}"), float(f"{lr:.4g}")
                L = (p["E"] + p["A"] / N_ ** p["alpha"] + p["B"] / D_ ** p["beta"]
                     + p["c"] * (np.log(lr_) - p["k0"] - p["k1"] * np.log(N_)) ** 2)
                rows.append((N_, D_, lr_, L * (1 + 0.005 * rng.standard_normal())))
    return pd.DataFrame(rows, columns=["N", "D", "lr", "loss"])


GENERATORS = {
    "synthetic_chinchilla.csv": chinchilla,
    "synthetic_data_constrained.csv": data_constrained,
    "synthetic_multigroup.csv": multigroup,
    "synthetic_lr_bowl.csv": lr_bowl,
}


def write_all(outdir: str | Path) -> list[Path]:
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, gen in GENERATORS.items():
        path = out / name
        gen().to_csv(path, index=False, float_format="%.10g")
        paths.append(path)
    return paths


if __name__ == "__main__":  # pragma: no cover
    target = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).parent / "synthetic_data")
    for p in write_all(target):
        print(p)
