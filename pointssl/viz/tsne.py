"""t-SNE scatter of embeddings, coloured by class."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tsne_png(panels: dict[str, tuple[np.ndarray, np.ndarray]], class_names: list[str], path,
             seed: int = 0) -> Path:
    """One t-SNE panel per entry of ``panels`` (title -> (features, labels)); atomic write."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    from pointssl.utils import atomic_path

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5.5), squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ax, (title, (x, y)) in zip(axes[0], panels.items()):
        x = (x - x.mean(0)) / (x.std(0) + 1e-6)
        tsne = TSNE(2, init="pca", perplexity=min(30, len(x) - 1), random_state=seed)
        emb = tsne.fit_transform(x)
        for c in np.unique(y):
            m = y == c
            ax.scatter(emb[m, 0], emb[m, 1], s=6, color=cmap(int(c) % 20),
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
