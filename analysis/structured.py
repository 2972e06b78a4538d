"""Structured tickets over seeds (Prasanna et al. 2020): the full fine-tuned model, the good subnetwork before
retraining, and the good, random and bad subnetworks retrained from the pre-trained weights."""

from __future__ import annotations

import pandas as pd

from cluster import conventions as C

GROUP = ["task", "model", "method"]
FULL_MODEL = "full model (fine-tuned in the search)"
BEFORE_RETRAINING = "good, before retraining"
ORDER = [FULL_MODEL, BEFORE_RETRAINING, "good", "random", "bad", "full"]
COLUMNS = [*GROUP, "subnetwork", "metric", "n", "seeds_expected", "partial", "mean", "std", "min", "max", "sparsity",
           "heads_kept", "heads_total", "mlps_kept", "mlps_total"]


def _rows(structured: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, shown subnetwork): a search gives the full model and the good subnetwork before retraining."""
    out = []
    for _, run in structured.iterrows():
        main = run["main_metric"]
        value = run.get(main, float("nan")) if main else float("nan")
        base = {**{c: run[c] for c in GROUP}, "seed": run["seed"], "metric": main}
        if run["subnetwork"] == C.SUBNETWORK_SEARCH:
            out.append({**base, "subnetwork": FULL_MODEL, "value": value, "sparsity": 0.0,
                        "heads_kept": run.get("good_heads_total"), "heads_total": run.get("good_heads_total"),
                        "mlps_kept": run.get("good_mlps_total"), "mlps_total": run.get("good_mlps_total")})
            out.append({**base, "subnetwork": BEFORE_RETRAINING, "value": run.get("good_metric_before_retraining"),
                        "sparsity": run.get("good_sparsity"),
                        **{k: run.get(f"good_{k}") for k in ("heads_kept", "heads_total", "mlps_kept", "mlps_total")}})
        else:
            out.append({**base, "subnetwork": run["subnetwork"], "value": value, "sparsity": run.get("sparsity"),
                        **{k: run.get(k) for k in ("heads_kept", "heads_total", "mlps_kept", "mlps_total")}})
    return pd.DataFrame(out)


def structured_table(structured: pd.DataFrame) -> pd.DataFrame:
    """Per task, model, strategy and subnetwork: seed statistics of the main dev metric (n, mean, sample std, min,
    max), mean sparsity of the prunable weights and mean kept heads/MLPs; `partial` when fewer seeds than the
    task's searches have results."""
    if structured.empty:
        return pd.DataFrame(columns=COLUMNS)
    rows = _rows(structured)
    rows["value"] = pd.to_numeric(rows["value"], errors="coerce")
    done = rows.dropna(subset=["value"])
    expected = rows.groupby(GROUP, dropna=False)["seed"].nunique().rename("seeds_expected")
    groups = done.groupby([*GROUP, "subnetwork", "metric"], dropna=False)
    table = groups["value"].agg(n="count", mean="mean", std="std", min="min", max="max")
    sizes = groups[["sparsity", "heads_kept", "heads_total", "mlps_kept", "mlps_total"]].agg(
        lambda column: pd.to_numeric(column, errors="coerce").mean())
    table = table.join(sizes).reset_index().merge(expected.reset_index(), on=GROUP, how="left")
    table["partial"] = table["n"] < table["seeds_expected"]
    rank = table["subnetwork"].map(lambda s: ORDER.index(s) if s in ORDER else len(ORDER))
    return table.assign(_rank=rank).sort_values([*GROUP, "_rank"], kind="stable")[COLUMNS].reset_index(drop=True)
