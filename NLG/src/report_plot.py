"""nlg.report's picture: the training loss (solid) and validation loss (dashed, where a run logs
one) of every row, per task; a second panel shows the adapters alone, on their own scale (full
fine-tuning's curve would squeeze theirs together). A row of several runs (seeds) draws their
mean at the steps all of them logged, with a band of ± one standard deviation."""
import statistics


def _mean_curve(runs, name):
    curves = [r.curves.get(name) for r in runs]
    curves = [c for c in curves if c and c[0]]
    if not curves:
        return None
    common = sorted(set(curves[0][0]).intersection(*(set(c[0]) for c in curves[1:])))
    if not common:
        return None
    by_step = [dict(zip(*c)) for c in curves]
    mean = [statistics.fmean(d[s] for d in by_step) for s in common]
    std = [statistics.stdev([d[s] for d in by_step]) if len(by_step) > 1 else 0.0 for s in common]
    return common, mean, std


def plot_losses(groups, path, title_of, task_title=str) -> bool:
    """Draw `groups` (nlg.report.Group) into `path`; False (and a message) without matplotlib or
    without any loss curve."""
    try:
        import matplotlib
        matplotlib.use("Agg")   # no display on servers / CI
        import matplotlib.pyplot as plt
    except ImportError:
        print("report: matplotlib is not installed, so no loss plot was drawn (pip install "
              "matplotlib); the tables are complete.")
        return False
    # One line per training setting: a run's curve is the same for every task it is scored on.
    by_task = {}
    for g in groups:
        if g.split in ("all", "dev") and any(r.curves.get("train", ([], []))[0] for r in g.runs):
            by_task.setdefault(g.task, []).append(g)
    if not by_task:
        print("report: no run logged a training loss (train_log.jsonl): no loss plot")
        return False
    fig, axes = plt.subplots(len(by_task), 2, figsize=(13, 5 * len(by_task)), squeeze=False)
    for (task, tgs), (ax_all, ax_ad) in zip(by_task.items(), axes):
        color = {id(g): f"C{i % 10}" for i, g in enumerate(tgs)}
        adapters = [g for g in tgs if g.first.method.get("method") not in ("full", "none")]
        for ax, subset, what in ((ax_all, tgs, "every run"), (ax_ad, adapters, "adapters only")):
            for g in subset:
                label = g.label or title_of(g.first.method)
                if len(g.runs) > 1:
                    label += f" ({len(g.runs)} runs)"
                train = _mean_curve(g.runs, "train")
                if train:
                    steps, mean, std = train
                    ax.plot(steps, mean, label=label, linewidth=1.5, color=color[id(g)])
                    if len(g.runs) > 1:
                        ax.fill_between(steps, [m - s for m, s in zip(mean, std)],
                                        [m + s for m, s in zip(mean, std)], alpha=0.2,
                                        color=color[id(g)])
                valid = _mean_curve(g.runs, "valid")
                if valid:
                    ax.plot(valid[0], valid[1], linestyle="--", marker="o", markersize=4,
                            color=color[id(g)])
            ax.set_xlabel("step")
            # the training loss includes label smoothing where a run used it, the validation not
            ax.set_ylabel("loss: training (solid), validation (dashed)")
            ax.set_title(f"{task_title(task)}: {what}")
            ax.grid(alpha=0.3)
            if subset:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
