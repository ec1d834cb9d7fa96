"""The lessons' figures: image grids, neighbours, curves, embeddings."""

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np


def show_images(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, ncols: int = 8,
                title: str | None = None, size: float = 1.4) -> plt.Figure:
    """A grid of images with optional per-image titles (lessons 1-6 and 8)."""
    ncols = max(1, min(ncols, len(images)))
    nrows = max(1, -(-len(images) // ncols))
    fig, axes = plt.subplots(nrows, ncols,
                             figsize=(size * ncols, size * nrows + (0.4 if title else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            small = np.asarray(images[i]).shape[0] <= 64
            ax.imshow(images[i], interpolation="nearest" if small else "antialiased")
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_neighbors(query: np.ndarray, neighbors: Sequence[np.ndarray], distances: Sequence[float],
                   labels: Sequence[str], title: str = "Nearest neighbours") -> plt.Figure:
    """The query image, then its neighbours captioned with label and distance (lessons 4, 9)."""
    captions = ["query"] + [f"{label}\nd={d:.2f}" for label, d in zip(labels, distances)]
    return show_images([query, *neighbors], captions, ncols=len(neighbors) + 1, title=title,
                       size=1.6)


def plot_curves(x: Sequence[float], curves: Mapping[str, Sequence[float]], title: str, xlabel: str,
                ylabel: str, logx: bool = False) -> plt.Figure:
    """Named curves over the same x values (lesson 6)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in curves.items():
        ax.plot(x, values, marker="o", label=name)
    if logx:
        ax.set_xscale("log")
        ax.set_xticks(list(x), [str(v) for v in x])
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_embeddings(maps: Mapping[str, np.ndarray], labels: np.ndarray, class_names: Sequence[str],
                    images: np.ndarray, thumbnails: int = 12, seed: int = 0,
                    title: str | None = None) -> plt.Figure:
    """2-D maps (e.g. t-SNE) side by side, coloured by class, a few images shown (lesson 4)."""
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage
    fig, axes = plt.subplots(1, len(maps), figsize=(6 * len(maps), 5.4), squeeze=False)
    picks = np.random.default_rng(seed).choice(len(labels), size=min(thumbnails, len(labels)),
                                               replace=False)
    for ax, (name, points) in zip(axes[0], maps.items()):
        for c, class_name in enumerate(class_names):
            member = np.asarray(labels) == c
            ax.scatter(points[member, 0], points[member, 1], s=6, alpha=0.6, label=class_name)
        for i in picks:  # the same images on every map, so you can follow them
            ax.add_artist(AnnotationBbox(OffsetImage(images[i], zoom=0.9), points[i], pad=0.1,
                                         bboxprops={"edgecolor": f"C{int(labels[i])}",
                                                    "linewidth": 2}))
        ax.set(title=name, xticks=[], yticks=[])
    axes[0][0].legend(markerscale=3, loc="best", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
