"""PNG figures (matplotlib, Agg): sparsity curves with seed bands, transfer heatmap, per-layer sparsity and mask
overlap."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402

from .masks import random_jaccard  # noqa: E402

DPI = 110
_MARKERS = "osD^vP*Xh"


def _save(fig, path: str) -> str:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _legend_below(fig, axes) -> None:
    """One legend for the figure, below its panels (outside the data), with every label of every panel once."""
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(3, len(entries)), fontsize=8, frameon=False)


def sparsity_curves(series: dict[str, pd.DataFrame], dense: dict[str, tuple[int, float, float, float]],
                    metrics: list[str], title: str, path: str) -> str:
    """One panel per metric: for each labelled series (summary rows of one task) the mean over seeds against
    sparsity with a min-max band; hollow markers where fewer seeds than the series has (partial). `dense` maps a
    metric to (n, mean, std, matching threshold) of level 0, drawn as a grey mean ± std band with the threshold as a
    red line, its value written at the right. The legend sits below the panels."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.4 * len(metrics), 4.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        ax.set_title(metric)
        if metric in dense and dense[metric][0] > 0:
            n, mean, std, threshold = dense[metric]
            if pd.notna(std):
                ax.axhspan(mean - std, mean + std, color="0.6", alpha=0.25, lw=0, label="dense ± std")
            ax.axhline(mean, color="0.35", ls="--", lw=1.2, label="dense (level 0) mean")
            if pd.notna(threshold):
                side = "-" if threshold <= mean else "+"
                ax.axhline(threshold, color="tab:red", ls="-.", lw=1.3,
                           label=f"matching threshold (dense mean {side} std)")
                ax.annotate(f"matching {threshold:.4f}", (1.0, threshold), xycoords=("axes fraction", "data"),
                            xytext=(3, 0), textcoords="offset points", va="center", fontsize=7, color="tab:red")
            ax.set_title(f"{metric} (dense n={n})")
        for index, (label, rows) in enumerate(series.items()):
            rows = rows[rows[f"{metric}_n"].fillna(0) > 0].dropna(subset=["sparsity"]).sort_values("sparsity")
            if rows.empty:
                continue
            x = rows["sparsity"] * 100
            color, marker = f"C{index % 10}", _MARKERS[index % len(_MARKERS)]
            n_text = "/".join(str(v) for v in sorted(set(rows[f"{metric}_n"].astype(int)), reverse=True))
            ax.fill_between(x, rows[f"{metric}_min"], rows[f"{metric}_max"], color=color, alpha=0.18, lw=0)
            ax.plot(x, rows[f"{metric}_mean"], color=color, lw=1.8, marker=marker, label=f"{label} (n={n_text})")
            partial = rows["partial"].astype(bool)
            ax.plot(x[partial], rows.loc[partial, f"{metric}_mean"], ls="none", marker=marker, mfc="white",
                    color=color)
        ax.set_xlabel("sparsity of prunable weights (%)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title}\nline: mean over seeds; band: min-max; hollow marker: partial (fewer seeds)", fontsize=10)
    fig.tight_layout()
    _legend_below(fig, axes[0])
    return _save(fig, path)


def _annotate(ax, values: np.ndarray, texts: list[list[str]], image) -> None:
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if texts[i][j]:
                shade = image.cmap(image.norm(values[i, j])) if np.isfinite(values[i, j]) else (1, 1, 1, 1)
                dark = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] < 0.5
                ax.text(j, i, texts[i][j], ha="center", va="center", fontsize=8, color="white" if dark else "black")


def transfer_heatmap(rows: pd.DataFrame, title: str, path: str) -> str:
    """Sources x targets of TRANSFER(S,T) - TRANSFER(T,T) (each target in its main metric) with a diverging colour
    map centred at 0, the difference and its n written in each cell; empty cells have no runs."""
    sources = sorted(rows["source_task"].unique())
    targets = sorted(rows["task"].unique())
    values = np.full((len(sources), len(targets)), np.nan)
    texts = [["" for _ in targets] for _ in sources]
    for _, row in rows.iterrows():
        i, j = sources.index(row["source_task"]), targets.index(row["task"])
        values[i, j] = row["diff"]
        n = f"n={row['diff_n']}" if row["diff_n"] == row["transfer_n"] == row["self_n"] else \
            f"n={row['transfer_n']} (ref. n={row['self_n']})"
        texts[i][j] = f"{row['diff']:+.3f}\n{n}" if pd.notna(row["diff"]) else f"no reference\nn={row['transfer_n']}"
    for i in range(len(sources)):
        for j in range(len(targets)):
            texts[i][j] = texts[i][j] or "no runs"
    finite = values[np.isfinite(values)]
    limit = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1e-3
    fig, ax = plt.subplots(figsize=(1.3 * len(targets) + 2.8, 1.0 * len(sources) + 1.8))
    ax.set_facecolor("0.75")
    image = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu", norm=TwoSlopeNorm(0.0, -limit, limit))
    _annotate(ax, values, texts, image)
    ax.set_xticks(range(len(targets)), targets)
    ax.set_yticks(range(len(sources)), sources)
    ax.set_xlabel("target task T (trained and evaluated)")
    ax.set_ylabel("source task S (mask found on)")
    labels = [f"{t}: {m}" for t, m in rows.groupby("task")["metric"].first().items()]
    fig.colorbar(image, ax=ax, label="TRANSFER(S,T) - TRANSFER(T,T)")
    ax.set_title(f"{title}\nmetric per target: {', '.join(labels)}; red: worse than T's own mask", fontsize=9)
    return _save(fig, path)


def layer_sparsity(layers: pd.DataFrame, title: str, path: str) -> str:
    """One panel per task: sparsity of each prunable tensor kind against layer index, mean over seeds with
    min-max error bars; tensors outside the layers (e.g. the pooler) as separate points at the right. One legend
    below the panels names every kind of every panel."""
    tasks = sorted(layers["task"].unique())
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4.0), squeeze=False, sharey=True)
    kinds = sorted(layers["kind"].unique())
    for ax, task in zip(axes[0], tasks):
        rows = layers[layers["task"] == task]
        seeds = rows["seed"].nunique()
        in_layers = rows[rows["layer"].notna()]
        top = int(in_layers["layer"].max()) + 1 if len(in_layers) else 0
        stats = rows.groupby(["kind", "layer"], dropna=False)["tensor_sparsity"].agg(["mean", "min", "max"])
        for kind, part in stats.groupby(level="kind"):
            index = kinds.index(kind)  # one colour and marker per kind in every panel, as the one legend says
            part = part.droplevel("kind").sort_index()
            x = np.array([top if pd.isna(layer) else layer for layer in part.index], dtype=float)
            y = part["mean"].to_numpy() * 100
            err = np.vstack([y - part["min"].to_numpy() * 100, part["max"].to_numpy() * 100 - y])
            ax.errorbar(x, y, yerr=err, marker=_MARKERS[index % len(_MARKERS)], capsize=2, lw=1.2,
                        color=f"C{index % 10}", ls="-" if part.index.notna().all() else "none", label=kind)
        ticks = list(range(top)) + ([top] if rows["layer"].isna().any() else [])
        ax.set_xticks(ticks, [str(t) for t in range(top)] + (["other"] if len(ticks) > top else []))
        ax.set_xlabel("layer")
        ax.set_title(f"{task} (n={seeds} seeds, level {', '.join(map(str, sorted(rows['level'].unique())))})")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("pruned weights in tensor (%)")
    fig.suptitle(f"{title}\nmean over seeds; error bars: min-max", fontsize=10)
    fig.tight_layout()
    _legend_below(fig, axes[0])
    return _save(fig, path)


def _overlap_axes(ax, pairs: pd.DataFrame, key: str, labels: list, title: str):
    """Mean Jaccard between the masks labelled by `key` ("task" or "seed") with n pairs per cell; the diagonal
    compares different masks with the same label."""
    index = {label: i for i, label in enumerate(labels)}
    total = np.zeros((len(labels), len(labels)))
    count = np.zeros((len(labels), len(labels)), dtype=int)
    for _, row in pairs.iterrows():
        i, j = index[row[f"{key}_a"]], index[row[f"{key}_b"]]
        for a, b in {(i, j), (j, i)}:
            total[a, b] += row["jaccard"]
            count[a, b] += 1
    values = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    texts = [[f"{values[i, j]:.3f}\nn={count[i, j]}" if count[i, j] else "" for j in range(len(labels))]
             for i in range(len(labels))]
    ax.set_facecolor("0.9")
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0.0, vmax=1.0)
    _annotate(ax, values, texts, image)
    ax.set_xticks(range(len(labels)), [str(v) for v in labels])
    ax.set_yticks(range(len(labels)), [str(v) for v in labels])
    ax.set_title(title, fontsize=9)
    return image


def task_overlaps(pairs: pd.DataFrame, title: str, path: str) -> str:
    """Tasks x tasks: mean Jaccard overlap over all pairs of masks (different seeds on the diagonal), n pairs."""
    tasks = sorted(set(pairs["task_a"]) | set(pairs["task_b"]))
    fig, ax = plt.subplots(figsize=(1.3 * len(tasks) + 3.2, 1.0 * len(tasks) + 1.8))
    sparsity = pd.concat([pairs["sparsity_a"], pairs["sparsity_b"]]).mean()
    image = _overlap_axes(ax, pairs, "task", tasks,
                          f"{title}\nmean over mask pairs (diagonal: different seeds of one task); "
                          f"independent random masks: {random_jaccard(sparsity, sparsity):.3f}")
    ax.set_xlabel("task")
    ax.set_ylabel("task")
    fig.colorbar(image, ax=ax, label="Jaccard overlap of kept weights")
    return _save(fig, path)


def seed_overlaps(pairs: pd.DataFrame, title: str, path: str) -> str:
    """One panel per task: Jaccard overlap between the masks of its seeds."""
    same = pairs[pairs["task_a"] == pairs["task_b"]]
    tasks = sorted(same["task_a"].unique())
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = same[same["task_a"] == task]
        seeds = sorted(set(rows["seed_a"]) | set(rows["seed_b"]))
        sparsity = pd.concat([rows["sparsity_a"], rows["sparsity_b"]]).mean()
        image = _overlap_axes(ax, rows, "seed", seeds,
                              f"{task} (random masks: {random_jaccard(sparsity, sparsity):.3f})")
        ax.set_xlabel("seed")
        ax.set_ylabel("seed")
    fig.suptitle(f"{title}\nJaccard overlap of kept weights between seeds", fontsize=10)
    fig.tight_layout()
    fig.colorbar(image, ax=list(axes[0]), label="Jaccard overlap", shrink=0.8)
    return _save(fig, path)
