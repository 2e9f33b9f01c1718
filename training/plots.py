"""The training report's plots: loss curves, marginals, correlation differences, a grid of generated images."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window: set before pyplot is imported
import matplotlib.pyplot as plt
import numpy as np

from synthserve.contract import Schema
from training.exported import ExportedModel
from training.features import EVALUATION_SEED, category_codes

__all__ = [
    "MAX_MARGINAL_PLOTS",
    "PLOT_DPI",
    "plot_correlation_difference",
    "plot_image_grid",
    "plot_losses",
    "plot_marginals",
]

PLOT_DPI = 80
MAX_MARGINAL_PLOTS = 16


def plot_losses(history: dict[str, list[float]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3))
    for key in ("train_loss", "validation_loss"):
        if history.get(key):
            ax.plot(history[key], label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (nats / row)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)


def plot_marginals(real: np.ndarray, synthetic: np.ndarray, schema: Schema, path: Path) -> None:
    columns = list(range(min(schema.width, MAX_MARGINAL_PLOTS)))
    n_cols = 4
    n_rows = (len(columns) + n_cols - 1) // n_cols
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(10, 2.2 * n_rows), squeeze=False)
    for ax, j in zip(axes.flat, columns):
        col = schema.columns[j]
        if col.kind == "categorical":
            assert col.categories is not None
            k = len(col.categories) + 1  # the last bar: gaps
            width = 0.4
            ax.bar(
                np.arange(k) - width / 2,
                np.bincount(category_codes(real[:, j], k - 1), minlength=k) / len(real),
                width,
                label="real",
            )
            ax.bar(
                np.arange(k) + width / 2,
                np.bincount(category_codes(synthetic[:, j], k - 1), minlength=k) / len(synthetic),
                width,
                label="synthetic",
            )
            ax.set_xticks(np.arange(k), [str(c)[:6] for c in (*col.categories, "(gap)")], fontsize=6)
        else:
            real_j, synthetic_j = real[~np.isnan(real[:, j]), j], synthetic[~np.isnan(synthetic[:, j]), j]
            bins = np.histogram_bin_edges(np.concatenate([real_j, synthetic_j]), bins=30)
            ax.hist(real_j, bins=bins, alpha=0.5, density=True, label="real")
            ax.hist(synthetic_j, bins=bins, alpha=0.5, density=True, label="synthetic")
        ax.set_title(col.name[:24], fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(columns) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)


def plot_correlation_difference(diff: np.ndarray, schema: Schema, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4))
    image = ax.imshow(diff, vmin=0, vmax=1, cmap="magma")
    ax.set_title("|corr(real) - corr(synthetic)|", fontsize=8)
    if schema.width <= 16:
        names = [c.name[:10] for c in schema.columns]
        ax.set_xticks(range(schema.width), names, rotation=90, fontsize=6)
        ax.set_yticks(range(schema.width), names, fontsize=6)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)


def plot_image_grid(model: ExportedModel, schema: Schema, path: Path, per_class: int = 8) -> None:
    assert schema.image_shape is not None
    n_classes = schema.n_classes
    labels = np.repeat(np.arange(n_classes), per_class)
    images = model.sample(labels, seed=EVALUATION_SEED).reshape(-1, *schema.image_shape)
    height, width = schema.image_shape
    fig, axes = plt.subplots(
        n_classes,
        per_class,
        figsize=(per_class * 0.6, n_classes * 0.6 * height / width),
        squeeze=False,
        gridspec_kw={"wspace": 0.05, "hspace": 0.05, "left": 0.02, "right": 0.98, "top": 0.98, "bottom": 0.02},
    )
    for ax, image in zip(axes.flat, images):
        ax.imshow(image, cmap="gray_r")
        ax.axis("off")
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)
