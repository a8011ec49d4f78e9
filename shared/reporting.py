"""The evaluation report published beside each model version.

Files: ``report/metrics.json``, ``report/pr_curve.png``, ``report/roc_curve.png``,
``report/score_histogram.png``, ``report/feature_importance.png``, ``report/index.html``.
"""
from __future__ import annotations

import html
import io
import json
from typing import Any

import numpy as np


def _figure_png(draw) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 4), dpi=100)
    try:
        draw(axes)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(figure)


def _forest(pipeline: Any) -> Any:
    return pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline


def build_report(candidate: Any, metadata: dict[str, Any]) -> dict[str, bytes]:
    """Report files (name → bytes) for a trained :class:`shared.retraining.Candidate`."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    holdout = candidate.holdout
    y_true = holdout["label"].to_numpy().astype(int)
    # Rows sampled from a larger population weigh what they stand for: the curves estimate it.
    weight = holdout["weight"].to_numpy(np.float64)
    scores = candidate.holdout_scores()
    metrics = metadata["metrics"]
    threshold = metadata["threshold"]

    def pr(axes):
        precision, recall, _ = precision_recall_curve(y_true, scores, sample_weight=weight)
        axes.plot(recall, precision)
        axes.set(xlabel="recall", ylabel="precision", title=f"PR curve (AP {metrics['average_precision']:.3f})")

    def roc(axes):
        fpr, tpr, _ = roc_curve(y_true, scores, sample_weight=weight)
        axes.plot(fpr, tpr)
        axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
        axes.set(xlabel="false positive rate", ylabel="true positive rate",
                 title=f"ROC curve (AUC {metrics['auc_roc']:.3f})")

    def histogram(axes):
        bins = np.linspace(0, 1, 41)
        axes.hist(scores[y_true == 0], bins=bins, weights=weight[y_true == 0], alpha=0.6, label="genuine", log=True)
        axes.hist(scores[y_true == 1], bins=bins, weights=weight[y_true == 1], alpha=0.6, label="fraud", log=True)
        axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.2f}")
        axes.set(xlabel="fraud probability", ylabel="transactions (log)", title="Scores by class (holdout)")
        axes.legend()

    importances = getattr(_forest(candidate.pipeline), "feature_importances_", np.zeros(len(candidate.features)))
    order = np.argsort(importances)

    def importance(axes):
        axes.barh(np.array(candidate.features)[order], importances[order])
        axes.set(xlabel="mean decrease in impurity", title="Feature importances")

    pngs = {}
    if candidate.bands is not None and candidate.costs is not None and candidate.validation is not None:
        from .decisions import cost_curve, plot_cost_curve

        validation = candidate.validation
        curve = cost_curve(validation["label"], validation["score"], validation["amount"], candidate.costs,
                           sample_weight=validation["weight"])
        pngs["cost_curve.png"] = plot_cost_curve(curve, candidate.bands)
    pngs.update({
        "pr_curve.png": _figure_png(pr),
        "roc_curve.png": _figure_png(roc),
        "score_histogram.png": _figure_png(histogram),
        "feature_importance.png": _figure_png(importance),
    })
    summary = {
        "version": metadata["version"],
        "threshold": threshold,
        "threshold_rule": metadata["threshold_rule"],
        "holdout": metrics,
        "validation": metadata["validation_metrics"],
        "gate": metadata.get("gate"),
        "windows": metadata["windows"],
        "sampling": metadata.get("sampling"),
        "bands": metadata.get("bands"),
        "costs": metadata.get("costs"),
        "decision_metrics": metadata.get("decision_metrics"),
        "feature_importances": dict(zip(candidate.features, map(float, importances))),
    }
    bands = metadata.get("bands")
    bands_html = ""
    if bands:
        cells = "".join(f"<tr><td>{html.escape(str(row.get('band', '')))}</td><td>"
                        f"{html.escape(json.dumps({k: v for k, v in row.items() if k != 'band'}))}</td></tr>"
                        for row in bands.get("table", []))
        bands_html = (f"<h2>Decisions by cost</h2><p>review from {bands['review_threshold']}, decline from "
                      f"{bands['decline_threshold']}; expected cost per 1,000 transactions "
                      f"{bands['expected_cost_per_1000']:.2f} (validation, costs "
                      f"{html.escape(json.dumps(metadata.get('costs')))})</p><table>{cells}</table>")
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{v:.4f}</td></tr>" if isinstance(v, float)
        else f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in metrics.items()
    )
    gate = metadata.get("gate") or {}
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Model {html.escape(metadata['version'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}img{{width:48%}}
td,th{{padding:2px 8px;text-align:left}}</style>
</head><body><h1>Model {html.escape(metadata['version'])}</h1>
<p>Trained on {metadata['training_rows']} transactions ({html.escape(metadata['windows']['train']['start'])} to
{html.escape(metadata['windows']['train']['end'])}); threshold {threshold:.4f} chosen by
<code>{html.escape(metadata['threshold_rule'])}</code> on {metadata['validation_rows']} validation transactions.</p>
<h2>Out-of-time holdout ({metadata['holdout_rows']} transactions)</h2><table>{rows}</table>
<p>Gate: {'promoted' if gate.get('promoted') else 'not promoted'} — {html.escape(str(gate.get('reason', '')))}</p>
{bands_html}
<img src="pr_curve.png"><img src="roc_curve.png"><img src="score_histogram.png"><img src="feature_importance.png">
{'<img src="cost_curve.png">' if "cost_curve.png" in pngs else ""}
</body></html>"""
    files = {f"report/{name}": data for name, data in pngs.items()}
    files["report/metrics.json"] = json.dumps(summary, indent=2, default=float).encode()
    files["report/index.html"] = page.encode()
    return files
