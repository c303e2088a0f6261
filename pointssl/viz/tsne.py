"""t-SNE scatter of embeddings, coloured by class."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# tab20 has 20 colours: class c gets colour c % 20 and marker c // 20, so every class up to
# 20 * len(MARKERS) has its own (colour, marker) pair (the demo's 23 classes included).
MARKERS = ("o", "^", "s", "D", "v")


def class_style(c: int) -> tuple[tuple, str]:
    """``(rgba colour, marker)`` of class ``c``: distinct for ``c < 20 * len(MARKERS)``."""
    from matplotlib import colormaps

    c = int(c)
    if c < 0 or c >= 20 * len(MARKERS):
        raise ValueError(f"t-SNE styles cover classes 0-{20 * len(MARKERS) - 1}, not {c}")
    return tuple(float(v) for v in colormaps["tab20"](c % 20)), MARKERS[c // 20]


def tsne_png(panels: dict[str, tuple[np.ndarray, np.ndarray]], class_names: list[str], path,
             seed: int = 0) -> Path:
    """One t-SNE panel per entry of ``panels`` (title -> (features, labels)); atomic write."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    from pointssl.utils import atomic_path

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5.5), squeeze=False)
    for ax, (title, (x, y)) in zip(axes[0], panels.items()):
        x = (x - x.mean(0)) / (x.std(0) + 1e-6)
        tsne = TSNE(2, init="pca", perplexity=min(30, len(x) - 1), random_state=seed)
        emb = tsne.fit_transform(x)
        for c in np.unique(y):
            m = y == c
            color, marker = class_style(c)
            ax.scatter(emb[m, 0], emb[m, 1], s=6 if marker == "o" else 9, color=color,
                       marker=marker,
                       label=class_names[c] if c < len(class_names) else str(c))
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1, 0.5), fontsize=8, markerscale=2)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return Path(path)
