"""The console page: server-rendered HTML with inline SVG charts, from a monitoring snapshot.

Everything that comes from data is escaped (:func:`e`): transaction, customer and terminal
ids, reasons, rule names and poison-queue text are attacker-controlled. The page has no
inline script or style (the Content-Security-Policy forbids both); its behaviour is
``static/console.js`` and its look ``static/console.css``, served by the console function.
"""
from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from ..drift import MAJOR_FROM, STABLE_BELOW

DECISION_COLOURS = {"approve": "#3a8d5c", "review": "#d9a400", "decline": "#c0392b", "(none)": "#999999"}
STATUS_COLOURS = {"promoted": "#3a8d5c", "rejected": "#d9a400", "failed": "#c0392b", "skipped": "#9aa5b1",
                  "running": "#2f6db5"}
LEVEL_CLASSES = {"stable": "ok", "moderate": "warn", "major": "bad", "unknown": "muted"}


def e(value: Any) -> str:
    """Text for HTML (element content and quoted attributes alike)."""
    return html.escape("" if value is None else str(value), quote=True)


def num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{float(value):.{digits}f}"


def pct(value: Any, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * float(value):.{digits}f} %"


def when(value: Any) -> str:
    """An ISO timestamp shortened to minutes, UTC."""
    if not value:
        return "–"
    text = str(value).replace("T", " ")
    return text[:16] + " UTC"


def render(snapshot: dict[str, Any], base: str, key: str) -> str:
    """The whole page. ``base``: the console's path (e.g. /api/console); ``key``: the function
    key it was opened with, which its links, images and the script's calls carry."""
    window = snapshot.get("window", "hour")
    query = f"?{urlencode({'code': key})}" if key else ""
    links = " ".join(
        f'<a class="{"active" if name == window else ""}" href="{e(base)}?{e(urlencode(_params(key, window=name)))}">'
        f'last {name}</a>' for name in ("hour", "day"))
    panels = [
        _panel("models", "Models", _models(snapshot.get("models"), base, query)),
        _panel("runs", "Training runs", _runs(snapshot.get("runs"))),
        _panel("traffic", f"Live traffic — last {e(window)}", _traffic(snapshot.get("traffic"))),
        _panel("drift", "Drift", _drift(snapshot.get("drift"))),
        _panel("outcomes", "Outcomes", _outcomes(snapshot.get("outcomes"))),
        _panel("health", "Health", _health(snapshot.get("health"))),
        _panel("review", "Review queue", _review(snapshot.get("review"))),
    ]
    timings = ", ".join(f"{e(k)} {num(v, 0)} ms" for k, v in (snapshot.get("timings_ms") or {}).items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Fraud detection console</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{e(base)}/static/console.css{e(query)}">
<script src="{e(base)}/static/console.js{e(query)}" defer></script>
</head>
<body data-base="{e(base)}" data-key="{e(key)}" data-window="{e(window)}">
<header><h1>Fraud detection console</h1>
<nav>{links} <button type="button" id="refresh">Refresh</button>
<span class="muted">as of {e(when(snapshot.get("generated_at")))}</span></nav></header>
<main>{"".join(panels)}</main>
<footer class="muted">Panel times: {timings}. JSON: <code>GET {e(base)}/monitoring?window={e(window)}</code></footer>
<div id="confirm" class="modal" hidden role="dialog" aria-modal="true" aria-labelledby="confirm-text">
<div class="modal-box"><p id="confirm-text"></p>
<div class="actions"><button type="button" id="confirm-cancel">Cancel</button>
<button type="button" id="confirm-ok" class="danger">Confirm</button></div></div></div>
<div id="toast" role="status" aria-live="polite" hidden></div>
</body></html>"""


def _params(key: str, **values: str) -> dict[str, str]:
    return {**values, **({"code": key} if key else {})}


def _panel(name: str, title: str, body: str) -> str:
    return f'<section class="panel" id="{name}"><h2>{title}</h2>{body}</section>'


def _error(part: Any) -> str | None:
    if part is None:
        return '<p class="bad">not available</p>'
    if isinstance(part, dict) and part.get("error"):
        return f'<p class="bad">could not be read: {e(part["error"])}</p>'
    return None


# --- models ---------------------------------------------------------------------------------


def _models(models: Any, base: str, query: str) -> str:
    failed = _error(models)
    if failed:
        return failed
    current = models.get("current")
    if not current:
        head = '<p class="bad">No model is promoted: predict answers 503.</p>'
    else:
        head = (f'<p>Serving <strong id="serving-version">{e(current)}</strong>, promoted '
                f'{e(when(models.get("promoted_at")))}: {e(models.get("reason") or "")}</p>')
    if models.get("rollback_to"):
        head += (f'<p><button type="button" class="danger" data-action="rollback" '
                 f'data-confirm="Roll back from {e(current)} to {e(models["rollback_to"])}? Predict serves it within '
                 f'MODEL_REFRESH_SECONDS.">Roll back to {e(models["rollback_to"])}</button></p>')
    rows = []
    for v in models.get("versions", []):
        m = v.get("metrics") or {}
        gate = v.get("gate") or {}
        windows = v.get("windows") or {}
        train = windows.get("train") or {}
        gate_text = "–" if not gate else (("promoted" if gate.get("promoted") else "not promoted") + ": "
                                           + str(gate.get("reason") or ""))
        actions = []
        if v.get("status") != "serving":
            actions.append(f'<button type="button" data-action="promote" data-version="{e(v["version"])}" '
                           f'data-confirm="Promote {e(v["version"])}? It is verified first; predict serves it within '
                           f'MODEL_REFRESH_SECONDS.">Promote</button>')
        if v.get("report"):
            actions.append(f'<button type="button" data-action="plots" data-version="{e(v["version"])}">Plots</button>')
        rows.append(
            f'<tr class="{"serving" if v.get("status") == "serving" else ""}" data-version="{e(v["version"])}">'
            f'<td><code>{e(v["version"])}</code></td><td>{e(v.get("status"))}</td>'
            f'<td class="n">{num(m.get("auc_roc"))}</td><td class="n">{num(m.get("average_precision"))}</td>'
            f'<td class="n">{num(m.get("precision"))}</td><td class="n">{num(m.get("recall"))}</td>'
            f'<td class="n">{num(v.get("review_threshold"))} / {num(v.get("decline_threshold", v.get("threshold")))}'
            f'</td><td class="reason">{e(gate_text)}</td>'
            f'<td>{e(when(train.get("start")))} → {e(when(train.get("end")))}</td>'
            f'<td class="n">{num(v.get("training_rows"))} / {num(v.get("validation_rows"))} / '
            f'{num(v.get("holdout_rows"))}</td><td>{"".join(actions)}</td></tr>')
        if v.get("report"):
            images = "".join(
                f'<figure><img alt="{e(name)}" data-src="{e(base)}/models/{e(v["version"])}/report/{e(name)}'
                f'{e(query)}"><figcaption>{e(name.removesuffix(".png").replace("_", " "))}</figcaption></figure>'
                for name in v["report"])
            shown = v.get("status") == "serving"
            rows.append(f'<tr class="plots" data-plots="{e(v["version"])}" {"" if shown else "hidden"}>'
                        f'<td colspan="11"><div class="figures">{images}</div></td></tr>')
    table = ('<table class="versions"><thead><tr><th>version</th><th>status</th><th>AUC ROC</th><th>avg precision</th>'
             '<th>precision</th><th>recall</th><th>review / decline from</th><th>gate</th><th>training window</th>'
             '<th>rows train / validation / holdout</th><th></th></tr></thead><tbody>' + "".join(rows)
             + "</tbody></table>")
    note = (f'<p class="muted">Holdout metrics (out of time, population estimates). '
            f'{num(models.get("total_versions"))} versions stored; the promoted one, its history and the newest '
            'are listed.</p>')
    return head + table + note


# --- training runs --------------------------------------------------------------------------


def _runs(runs: Any) -> str:
    failed = _error(runs)
    if failed:
        return failed
    items = runs.get("runs", [])
    if not items:
        return '<p class="muted">No training run recorded yet.</p>'
    counts = " · ".join(f'<span class="dot" data-status="{e(k)}"></span>{e(k)} {num(v)}'
                        for k, v in sorted(runs.get("counts", {}).items()))
    chart = _timeline(items)
    rows = []
    for run in items[:15]:
        drift = run.get("drift") or {}
        metrics = run.get("metrics") or {}
        rows.append(f'<tr><td>{e(when(run["started_at"]))}</td><td>{e(run["trigger"])}</td>'
                    f'<td><span class="status" data-status="{e(run["status"])}">{e(run["status"])}</span></td>'
                    f'<td class="reason">{e(run["reason"])}</td><td class="n">{num(run.get("new_labels"))}</td>'
                    f'<td><code>{e(run.get("model_version") or "")}</code></td>'
                    f'<td class="n">{num(metrics.get("average_precision"))}</td>'
                    f'<td class="n">{num(drift.get("max_psi"))} {e(drift.get("max_feature") or "")}</td></tr>')
    return (f'<p>{counts} <span class="muted">(latest {num(len(items))})</span></p>{chart}'
            '<table><thead><tr><th>started</th><th>trigger</th><th>status</th><th>reason</th><th>new labels</th>'
            '<th>version</th><th>AP</th><th>max PSI</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")


def _timeline(runs: Sequence[dict[str, Any]]) -> str:
    """The runs as dots on a time axis, one lane per status."""
    from datetime import datetime

    def moment(text: str) -> float:
        return datetime.fromisoformat(str(text).replace("Z", "")).timestamp()

    stamps = [moment(r["started_at"]) for r in runs]
    low, high = min(stamps), max(stamps)
    span = max(high - low, 1.0)
    lanes = ["promoted", "rejected", "failed", "skipped", "running"]
    width, lane_height, left = 720, 16, 70
    marks = []
    for run, stamp in zip(runs, stamps):
        lane = lanes.index(run["status"]) if run["status"] in lanes else len(lanes) - 1
        x = left + (stamp - low) / span * (width - left - 10)
        y = 10 + lane * lane_height
        marks.append(f'<circle cx="{x:.1f}" cy="{y}" r="5" fill="{STATUS_COLOURS.get(run["status"], "#666")}">'
                     f'<title>{e(when(run["started_at"]))} {e(run["status"])}: {e(run["reason"])}</title></circle>')
    labels = "".join(f'<text x="0" y="{14 + i * lane_height}" class="axis">{name}</text>'
                     for i, name in enumerate(lanes))
    height = 10 + len(lanes) * lane_height + 14
    axis = (f'<text x="{left}" y="{height - 2}" class="axis">{e(when(runs[-1]["started_at"]))}</text>'
            f'<text x="{width - 10}" y="{height - 2}" class="axis" text-anchor="end">{e(when(runs[0]["started_at"]))}'
            f'</text>')
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="training runs over time">{labels}{"".join(marks)}{axis}</svg>')


# --- traffic --------------------------------------------------------------------------------


def _bars(counts: Sequence[int], labels: Sequence[str], colour: str, log_scale: bool = False, width: int = 480,
          height: int = 120, aria: str = "") -> str:
    """A bar chart; ``labels`` name each bar (tooltips) and the first and last go under the axis."""
    top = max(counts) if counts else 0
    scale = (lambda v: math.log10(1 + v) / math.log10(1 + top)) if log_scale and top else \
        (lambda v: v / top if top else 0.0)
    n = max(len(counts), 1)
    step = width / n
    bars = []
    for i, (count, label) in enumerate(zip(counts, labels)):
        h = scale(count) * (height - 20)
        bars.append(f'<rect x="{i * step + 1:.1f}" y="{height - 14 - h:.1f}" width="{max(step - 2, 1):.1f}" '
                    f'height="{h:.1f}" fill="{colour}"><title>{e(label)}: {num(int(count))}</title></rect>')
    axis = ""
    if labels:
        axis = (f'<text x="0" y="{height - 2}" class="axis">{e(labels[0])}</text>'
                f'<text x="{width}" y="{height - 2}" class="axis" text-anchor="end">{e(labels[-1])}</text>')
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="{e(aria)}">{"".join(bars)}{axis}</svg>')


def _mix(decisions: dict[str, int], total: int, width: int = 480) -> str:
    """The decision mix as one stacked bar."""
    x = 0.0
    parts = []
    for name in ("approve", "review", "decline", *sorted(set(decisions) - {"approve", "review", "decline"})):
        count = decisions.get(name, 0)
        if not count or not total:
            continue
        w = count / total * width
        parts.append(f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="22" '
                     f'fill="{DECISION_COLOURS.get(name, "#777")}"><title>{e(name)}: {num(count)} '
                     f'({pct(count / total)})</title></rect>')
        x += w
    return (f'<svg class="chart" viewBox="0 0 {width} 22" width="{width}" height="22" role="img" '
            f'aria-label="decision mix">{"".join(parts)}</svg>')


def _traffic(traffic: Any) -> str:
    failed = _error(traffic)
    if failed:
        return failed
    total = traffic["transactions"]
    decisions = traffic.get("decisions", {})
    legend = " ".join(f'<span class="dot" data-decision="{e(k)}"></span>{e(k)} {num(v)} '
                      f'({pct(v / total if total else None)})' for k, v in sorted(decisions.items()))
    rules = ", ".join(f"{e(k)} {num(v)}" for k, v in sorted(traffic.get("rules", {}).items())) or "none"
    volume = traffic.get("volume") or {"edges": [], "counts": []}
    volume_labels = [when(t)[11:16] for t in volume["edges"][:-1]]
    histogram = traffic.get("score_histogram") or {"edges": [], "counts": []}
    score_labels = [f"{a:.2f}–{b:.2f}" for a, b in zip(histogram["edges"], histogram["edges"][1:])]
    degraded_share = traffic["degraded"] / total if total else None
    return (f'<div class="kpis"><div><b id="traffic-total">{num(total)}</b> transactions</div>'
            f'<div><b>{num(traffic["scored"])}</b> scored online</div>'
            f'<div class="{"bad" if degraded_share and degraded_share > 0.01 else ""}"><b>{pct(degraded_share)}</b> '
            f'degraded</div><div><b>{num(traffic.get("mean_score"))}</b> mean score</div></div>'
            f'<h3>Decisions</h3>{_mix(decisions, total)}<p>{legend}</p><p class="muted">Operator rules that decided: '
            f'{rules}</p><div class="charts"><figure><figcaption>Volume ({e(when(traffic.get("since")))} → '
            f'{e(when(traffic.get("until")))})</figcaption>'
            f'{_bars(volume["counts"], volume_labels, "#2f6db5", aria="volume over time")}</figure>'
            f'<figure><figcaption>Score distribution (log scale)</figcaption>'
            f'{_bars(histogram["counts"], score_labels, "#7b5ea7", log_scale=True, aria="score distribution")}'
            f'</figure></div>')


# --- drift ----------------------------------------------------------------------------------


def _drift(drift: Any) -> str:
    failed = _error(drift)
    if failed:
        return failed
    status = drift.get("status")
    if status == "no_model":
        return '<p class="muted">No model is promoted.</p>'
    if status == "no_reference":
        return (f'<p class="muted">Model {e(drift.get("model_version"))} was published without a drift reference '
                f'(versions published by this release have one).</p>')
    if status == "too_few_rows":
        return (f'<p class="muted">{num(drift.get("sample_rows"))} transactions in the last '
                f'{num(drift.get("window_hours"))} h: at least {num(drift.get("min_rows"))} are needed for a PSI.</p>')
    level = drift.get("level", "unknown")
    head = (f'<p>Largest shift: <b class="{LEVEL_CLASSES.get(level, "")}">PSI {num(drift.get("max_psi"))} '
            f'({e(drift.get("max_feature"))}, {e(level)})</b>. Live: a sample of {num(drift.get("sample_rows"))} of '
            f'{num(drift.get("window_rows"))} transactions of the last {num(drift.get("window_hours"))} h; reference: '
            f'{num(drift.get("reference_rows"))} {e(drift.get("reference_source") or "")} rows of '
            f'{e(drift.get("model_version"))}. Retrains below RETRAIN_THRESHOLD from PSI '
            f'{num(drift.get("threshold"), 2)} (DRIFT_RETRAIN_PSI; 0 = off).</p>')
    parts = ([drift["score"]] if drift.get("score") else []) + list(drift.get("features", []))
    rows = []
    for part in parts:
        value = part.get("psi")
        level = part.get("level", "unknown")
        width = 0 if value is None else min(value / (2 * MAJOR_FROM), 1) * 160
        rows.append(f'<tr><td>{e(part["name"])}</td><td class="n {LEVEL_CLASSES.get(level, "")}">{num(value)}</td>'
                    f'<td><svg class="chart" width="160" height="10" viewBox="0 0 160 10" role="img" '
                    f'aria-label="PSI"><rect x="0" y="0" width="{width:.1f}" height="10" '
                    f'class="psi-{LEVEL_CLASSES.get(level, "muted")}"/></svg></td>'
                    f'<td>{_shares(part.get("reference", []), part.get("live", []))}</td>'
                    f'<td class="n">{num(part.get("rows"))}</td></tr>')
    return (head + '<table><thead><tr><th>of</th><th>PSI</th><th></th><th>reference vs live share per bin</th>'
            f'<th>live rows</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
            f'<p class="muted">PSI below {STABLE_BELOW} stable, below {MAJOR_FROM} moderate, above major. The score is '
            'compared on transactions the serving version scored (not degraded).</p>')


def _shares(reference: Sequence[float], live: Sequence[float], width: int = 200, height: int = 24) -> str:
    n = max(len(reference), 1)
    step = width / n
    top = max([*reference, *live, 1e-9])
    bars = []
    for i, (r, q) in enumerate(zip(reference, live)):
        for offset, value, css in ((0.0, r, "ref"), (step / 2, q, "live")):
            h = value / top * height
            bars.append(f'<rect x="{i * step + offset:.1f}" y="{height - h:.1f}" width="{max(step / 2 - 1, 1):.1f}" '
                        f'height="{h:.1f}" class="{css}"><title>bin {i + 1}: {css} {pct(value)}</title></rect>')
    return (f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="shares per bin">{"".join(bars)}</svg>')


# --- outcomes -------------------------------------------------------------------------------


def _outcomes(outcomes: Any) -> str:
    failed = _error(outcomes)
    if failed:
        return failed
    rows = "".join(
        f'<tr><td><code>{e(v["model_version"])}</code></td><td class="n">{num(v["rows"])}</td>'
        f'<td class="n">{num(v["labeled"])}</td><td class="n">{pct(v["coverage"])}</td>'
        f'<td class="n">{num(v["frauds"])}</td><td class="n">{num(v["decline_precision"])}</td>'
        f'<td class="n">{num(v["decline_recall"])}</td><td class="n">{num(v["flag_precision"])}</td>'
        f'<td class="n">{num(v["flag_recall"])}</td></tr>' for v in outcomes.get("versions", []))
    return (f'<p>Label coverage: <b>{pct(outcomes.get("coverage"))}</b> of {num(outcomes.get("transactions"))} '
            f'transactions since {e(when(outcomes.get("since")))} have a label.</p>'
            '<table><thead><tr><th>scored by</th><th>transactions</th><th>labeled</th><th>coverage</th>'
            '<th>frauds</th><th>decline precision</th><th>decline recall</th><th>flag precision</th>'
            f'<th>flag recall</th></tr></thead><tbody>{rows}</tbody></table>'
            '<p class="muted">On the labeled transactions each version scored: precision among those it declined '
            '(or flagged: review or decline) that were labeled, recall among the labeled frauds. Labels arrive late: '
            'recent weeks read low.</p>')


# --- health ---------------------------------------------------------------------------------


def _health(health: Any) -> str:
    failed = _error(health)
    if failed:
        return failed
    poison = health.get("poison", [])
    rows = "".join(f'<tr><td>{e(when(m.get("inserted_on")))}</td><td><code>{e(m.get("id"))}</code></td>'
                   f'<td class="n">{num(m.get("dequeue_count"))}</td><td class="n">{num(m.get("size"))} B</td>'
                   f'<td class="reason">{e(m.get("reason"))}</td></tr>' for m in poison)
    table = ('<table><thead><tr><th>inserted</th><th>message</th><th>dequeued</th><th>size</th><th>reason</th></tr>'
             f'</thead><tbody>{rows}</tbody></table>') if poison else ""
    return (f'<div class="kpis"><div><b id="queue-depth">{num(health.get("queue_depth"))}</b> queued</div>'
            f'<div class="{"bad" if health.get("poison_depth") else ""}"><b id="poison-depth">'
            f'{num(health.get("poison_depth"))}</b> poisoned</div></div>{table}'
            '<p class="muted">Depths are approximate (Azure Queue Storage). Replay poison messages after a fix with '
            '<code>python -m shared.cli poison requeue</code>.</p>')


# --- review queue ---------------------------------------------------------------------------


def _review(review: Any) -> str:
    failed = _error(review)
    if failed:
        return failed
    items = review.get("transactions", [])
    what = ("Transactions decided <b>review</b> and not labeled yet, newest first"
            if review.get("mode") == "review" else
            "The highest-scoring unlabeled transactions of the last day (DECISION_POLICY has no review band)")
    if not items:
        return f'<p>{what}: none.</p>'
    rows = []
    for tx in items:
        reasons = "; ".join(str(r.get("text") or r.get("feature") or "") for r in tx.get("reasons") or []
                            if isinstance(r, dict))
        tid = e(tx["transaction_id"])
        rows.append(
            f'<tr data-transaction="{tid}"><td>{e(when(tx["timestamp"]))}</td><td><code>{tid}</code></td>'
            f'<td>{e(tx["customer_id"])}</td><td>{e(tx["terminal_id"])}</td><td class="n">{num(tx["amount"], 2)}</td>'
            f'<td class="n">{num(tx["fraud_probability"])}</td><td>{e(tx.get("rule") or tx.get("decision") or "")}</td>'
            f'<td class="reason">{e(reasons)}</td><td class="actions">'
            f'<button type="button" class="danger" data-action="label" data-fraud="true" data-transaction="{tid}" '
            f'data-confirm="Label {tid} as FRAUD? The label trains the next model.">Fraud</button> '
            f'<button type="button" data-action="label" data-fraud="false" data-transaction="{tid}" '
            f'data-confirm="Label {tid} as genuine? The label trains the next model.">Genuine</button></td></tr>')
    return (f'<p>{what} (at most {num(review.get("limit"))}). A label is recorded as POST /api/labels records it, '
            'with source <code>console</code> and the fingerprint of this page\'s key.</p>'
            '<table class="review"><thead><tr><th>time</th><th>transaction</th><th>customer</th><th>terminal</th>'
            '<th>amount</th><th>score</th><th>decided by</th><th>reasons</th><th>label</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")
