"""`python -m readers.report WORKSPACE`: one self-contained HTML page about a run.

It writes `WORKSPACE/report.html` and `WORKSPACE/report_score.png`: the score of every iteration against the base
model, the table of iterations with links to their plan, validation report and sample summary, where each role's
time went, and a visible note when the scores are not canonical. The page needs no network (inline CSS, the plot
is a relative file), so it opens straight from the workspace folder.

The run's state comes from the checkpoint database (the graph's own SqliteSaver, opened read-only so a live run is
not disturbed); whatever the database lacks is read from the workspace files instead.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from core.errors import EXIT_INPUT, InputError
from core.handoffs import IterationPlan, IterationRecord
from core.workspace import MANIFEST_FILE, METRICS_FILE, SUMMARY_FILE, VALIDATION_REPORT, IterationPaths, Workspace

ROLE_ORDER = ("task_definition", "baseline_evaluation", "planner", "data_selection", "data_construction",
              "data_validation", "trainer", "evaluator", "logger", "final_evaluation")


class NotAWorkspace(InputError):
    """The path given is not a posttrain-graph workspace."""


@dataclass
class Score:
    """One evaluation, as metrics.json or an EvalReport records it."""

    accuracy: float
    stderr: float | None = None
    n: int | None = None
    canonical: bool | None = None
    max_tokens: int | None = None


@dataclass
class Row:
    """One iteration as the report shows it."""

    iteration: int
    stage: int | None = None
    objective: str = ""
    rows: int | None = None
    method: str = ""
    score: float | None = None
    delta_vs_base: float | None = None
    kept: bool | None = None
    status: str = "unknown"
    canonical: bool | None = None
    vs: Any = None
    """The paired comparison with the best before it (a Comparison), when recorded."""
    strategies: list[str] = field(default_factory=list)
    source: str = "files"
    links: dict[str, str] = field(default_factory=dict)


@dataclass
class RunView:
    """Everything the page shows, whichever source it came from."""

    root: Path
    settings: dict[str, Any] = field(default_factory=dict)
    baseline: Score | None = None
    final: Score | None = None
    rows: list[Row] = field(default_factory=list)
    role_seconds: dict[str, float] = field(default_factory=dict)
    spent_s: float | None = None
    stop_reason: str | None = None
    pending: tuple[str, ...] = ()
    failures: dict[int, dict[str, int]] = field(default_factory=dict)
    """Per iteration (0 is the base model): how many samples were right, and each failure category's count."""
    llm_tokens: dict[str, Any] = field(default_factory=dict)
    """LLM tokens per role (TokenUsage), when LLM backbones decided."""
    final_result: Any = None
    """The run's closing measurement (a FinalResult), when it got there."""
    state_source: str = "none"
    notes: list[str] = field(default_factory=list)

    @property
    def canonical(self) -> bool | None:
        """False as soon as any score shown is not canonical; None when no score says."""
        flags = [s.canonical for s in (self.baseline, self.final) if s] + [r.canonical for r in self.rows]
        known = [f for f in flags if f is not None]
        return all(known) if known else None

    @property
    def max_tokens(self) -> int | None:
        for s in (self.baseline, self.final):
            if s and s.max_tokens:
                return s.max_tokens
        return None


# --------------------------------------------------------------------------------------------- loading

def check_workspace(path: Path) -> Path:
    """The workspace root, or NotAWorkspace with a one-line reason."""
    if not path.exists():
        raise NotAWorkspace(f"{path} does not exist")
    if not path.is_dir():
        raise NotAWorkspace(f"{path} is not a folder")
    if not Workspace(path).looks_like_one():
        raise NotAWorkspace(f"{path} is not a posttrain-graph workspace (no checkpoints, settings, iterations or log)")
    return path.resolve()


def read_state(root: Path, thread_id: str = "run") -> tuple[dict[str, Any], tuple[str, ...]]:
    """The last checkpointed state values and the nodes still to run; ({}, ()) when there is no database."""
    from graph.checkpoints import read_state as read

    return read(Workspace(root).checkpoint_db, thread_id)


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _score_from_metrics(path: Path) -> Score | None:
    m = _read_json(path)
    if m is None:
        return None
    return Score(accuracy=float(m["accuracy"]), stderr=m.get("stderr"), n=m.get("n"),
                 canonical=m.get("canonical"), max_tokens=m.get("max_tokens"))


def _score_from_report(report: Any) -> Score:
    return Score(accuracy=report.accuracy, stderr=report.stderr, n=report.n, canonical=report.canonical,
                 max_tokens=report.max_tokens)


def _model(cls: type, path: Path) -> Any:
    """A handoff the roles wrote as JSON beside their Markdown (None when absent or unreadable)."""
    if not path.is_file():
        return None
    try:
        return cls.model_validate_json(path.read_text())
    except ValueError:
        return None


def _links(root: Path, paths: IterationPaths) -> dict[str, str]:
    """Relative links to the files a reader opens first, for those that exist."""
    wanted = {"plan": paths.plan_md, "validation": paths.data / VALIDATION_REPORT,
              "samples": paths.eval / SUMMARY_FILE}
    return {label: quote(f.relative_to(root).as_posix()) for label, f in wanted.items() if f.is_file()}


def _row_from_files(root: Path, it: int, paths: IterationPaths, base: Score | None) -> Row:
    """An iteration rebuilt from the JSON its roles wrote (used when the checkpoint has no record)."""
    plan = _model(IterationPlan, paths.plan_json)
    record = _model(IterationRecord, paths.record_json)
    manifest = _read_json(paths.data / MANIFEST_FILE)
    score = _score_from_metrics(paths.eval / METRICS_FILE)
    return Row(iteration=it, stage=int(plan.stage) if plan else None, objective=plan.objective if plan else "",
               rows=manifest.get("rows") if manifest else None, method="; ".join(plan.changes) if plan else "",
               score=score.accuracy if score else None,
               delta_vs_base=score.accuracy - base.accuracy if score and base else None,
               kept=record.kept if record else None, status=record.status if record else "incomplete",
               canonical=score.canonical if score else None, vs=record.vs if record else None,
               strategies=record.strategies if record else [],
               links=_links(root, paths))


def load_view(root: Path) -> RunView:
    """The run as the checkpoint records it, completed from the workspace files."""
    ws = Workspace(root)
    view = RunView(root=root, settings=_read_json(ws.settings_file) or {})
    import sqlite3

    try:
        values, view.pending = read_state(root)
    except sqlite3.Error as e:  # a locked or damaged database: say so on the page and on stderr, use the files
        values = {}
        view.notes.append(f"checkpoint database unreadable ({type(e).__name__}: {e}); the page is built from files")
        print(f"warning: {view.notes[-1]}", file=sys.stderr)
    view.state_source = "checkpoint" if values else "files"
    if not values and ws.checkpoint_db.is_file() and not view.notes:
        view.notes.append("the checkpoint database holds no state for thread 'run'; the page is built from files")

    iterations = {i: p for i, p in ws.iterations().items() if i > 0}
    view.baseline = (_score_from_report(values["baseline"]) if values.get("baseline")
                     else _score_from_metrics(ws.iteration(0).eval / METRICS_FILE))
    view.final = (_score_from_report(values["final_eval"]) if values.get("final_eval")
                  else _score_from_metrics(ws.final_eval / METRICS_FILE))
    view.role_seconds = dict(values.get("role_seconds") or {})
    view.spent_s = values.get("spent_s")
    view.stop_reason = values.get("stop_reason")

    records = {r.iteration: r for r in values.get("history", [])}
    current = values.get("iteration")
    for it in sorted(set(records) | set(iterations)):
        row = _row_from_files(root, it, iterations.get(it, ws.iteration(it)), view.baseline)
        if it in records:
            r = records[it]
            row = Row(iteration=it, stage=int(r.stage), objective=r.objective, rows=r.rows, method=r.method,
                      score=r.score, delta_vs_base=r.delta_vs_base, kept=r.kept, status=r.status,
                      canonical=row.canonical, vs=getattr(r, "vs", None),
                      strategies=list(getattr(r, "strategies", [])), source="checkpoint", links=row.links)
        elif view.pending and it == current:
            row.status = f"in progress (next: {', '.join(view.pending)})"
        if row.canonical is None and row.score is not None and view.baseline:
            row.canonical = view.baseline.canonical  # same evaluation profile as the baseline
        view.rows.append(row)
    for it, paths in {0: ws.iteration(0), **iterations}.items():
        metrics = _read_json(paths.eval / METRICS_FILE)
        if metrics and "failure_categories" in metrics:
            view.failures[it] = {"correct": metrics.get("correct", 0), **metrics["failure_categories"]}
    view.final_result = values.get("final")
    view.llm_tokens = dict(values.get("llm_tokens") or {})
    return view


# --------------------------------------------------------------------------------------------- rendering

def plot_scores(view: RunView, out: Path) -> Path:
    """Development score per iteration, the base model as a line, the final full-benchmark score if any."""
    import matplotlib

    matplotlib.use("Agg")  # no display here, and none needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=110)
    try:
        scored = [r for r in view.rows if r.score is not None]
        xs = [r.iteration for r in scored]
        ys = [r.score for r in scored]
        if scored:
            ax.plot(xs, ys, "-", color="#4a6fa5", lw=1.5, zorder=2)
            kept = [r for r in scored if r.kept]
            other = [r for r in scored if not r.kept]
            if other:  # empty series would still add a legend entry
                ax.scatter([r.iteration for r in other], [r.score for r in other], s=46, color="white",
                           edgecolor="#4a6fa5", lw=1.8, zorder=3, label="development score")
            if kept:
                ax.scatter([r.iteration for r in kept], [r.score for r in kept], s=46, color="#4a6fa5", zorder=3,
                           label="development score (kept)")
        failed = [r.iteration for r in view.rows if r.score is None]
        if failed:
            floor = view.baseline.accuracy if view.baseline else 0.0
            ax.scatter(failed, [floor] * len(failed), marker="x", s=50, color="#b03a2e", zorder=3,
                       label="no score (failed / unfinished)")
        if view.baseline:
            ax.axhline(view.baseline.accuracy, color="#7f7f7f", ls="--", lw=1.2,
                       label=f"base model {view.baseline.accuracy:.3f}")
            ax.scatter([0], [view.baseline.accuracy], s=46, color="#7f7f7f", zorder=3)
        last = max([r.iteration for r in view.rows] or [0])
        if view.final:
            ax.errorbar([last + 1], [view.final.accuracy], yerr=[view.final.stderr or 0], fmt="*", ms=13,
                        color="#c27c0e", zorder=4, label=f"final, full benchmark {view.final.accuracy:.3f}")
        values = ys + [s.accuracy for s in (view.baseline, view.final) if s]
        top = max(values or [0.0])
        ax.set_ylim(min(0.0, min(values or [0.0])) - 0.02, max(0.1, top * 1.15 + 0.02))
        ticks = list(range(0, last + 2 if view.final else last + 1))
        names = {0: "base", last + 1: "final"} if view.final else {0: "base"}
        ax.set_xticks(ticks, [names.get(t, str(t)) for t in ticks])
        ax.set_xlim(-0.4, ticks[-1] + 0.4 if ticks else 1)
        ax.set_xlabel("iteration")
        ax.set_ylabel("accuracy")
        suffix = "" if view.canonical is not False else f"  (not canonical: max_tokens {view.max_tokens})"
        ax.set_title(f"score per iteration{suffix}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", frameon=False)
        fig.tight_layout()
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out


FAILURE_COLOURS = {"correct": "#2e7d32", "data": "#4a6fa5", "training": "#c27c0e", "inference_template": "#b03a2e"}


def plot_failures(view: RunView, out: Path) -> Path:
    """Per iteration, the evaluated samples split into right answers and each failure category, stacked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = sorted(view.failures)
    fig, ax = plt.subplots(figsize=(7.5, 3.2), dpi=110)
    try:
        bottom = [0] * len(its)
        for cat, colour in FAILURE_COLOURS.items():
            counts = [view.failures[i].get(cat, 0) for i in its]
            if any(counts):
                ax.bar([str(i) if i else "base" for i in its], counts, bottom=bottom, color=colour,
                       label=cat.replace("_", " "))
                bottom = [b + c for b, c in zip(bottom, counts)]
        ax.set_xlabel("iteration")
        ax.set_ylabel("samples")
        ax.set_title("right answers and failure classes per evaluation", fontsize=10)
        ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222;
 padding:0 16px;line-height:1.4}
h1{font-size:1.5em;margin-bottom:4px} h2{font-size:1.15em;margin-top:28px;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:.92em} .meta b{color:#222}
.warn{background:#fff4e5;border:1px solid #f0b35a;border-left:6px solid #e08e0b;padding:10px 14px;margin:14px 0}
table{border-collapse:collapse;width:100%;font-size:.9em} th,td{border:1px solid #ddd;padding:5px 8px;
 vertical-align:top;text-align:left} th{background:#f4f6f8} td.num{text-align:right;white-space:nowrap}
tr.base td{background:#f8f8f8;font-style:italic} tr.final td{background:#fdf6e8}
.pos{color:#1e7d32} .neg{color:#b03a2e} .small{font-size:.85em;color:#555}
.bar{background:#4a6fa5;height:12px;display:inline-block;vertical-align:middle}
img{max-width:100%;border:1px solid #eee} td.links a{margin-right:6px;white-space:nowrap}
"""


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "–" if x is None else format(x, spec)


def _delta_cell(d: float | None) -> str:
    if d is None:
        return '<td class="num">–</td>'
    cls = "pos" if d > 0 else "neg" if d < 0 else ""
    return f'<td class="num {cls}">{d:+.3f}</td>'


def _score_cell(score: float | None, canonical: bool | None) -> str:
    mark = "†" if canonical is False and score is not None else ""
    return f'<td class="num">{_fmt(score)}{mark}</td>'


def _kept_cell(kept: bool | None) -> str:
    return f"<td>{'–' if kept is None else 'yes' if kept else 'no'}</td>"


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def render_html(view: RunView, png_name: str | None) -> str:
    """The page, as one string with inline CSS and only relative links."""
    e = html.escape
    s = view.settings
    title = f"posttrain-graph report: {view.root.name}"
    status = (f"stopped: {view.stop_reason}" if view.stop_reason and not view.pending
              else f"unfinished: next node {', '.join(view.pending)} (continue with --resume)" if view.pending
              else "status unknown (no checkpoint state)")
    meta = [("task", s.get("task")), ("base model", s.get("base_model") or "embedded SmolLM2-135M-Instruct"),
            ("backbone", s.get("backbone")), ("budget", f"{s['hours']:g} h" if s.get("hours") else None),
            ("iteration cap", s.get("max_iterations")), ("target", s.get("target")),
            ("work spent", _clock(view.spent_s) if view.spent_s is not None else None), ("run", status)]
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(title)}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>{e(title)}</h1>",
             '<div class="meta">' + " · ".join(f"{e(k)}: <b>{e(str(v))}</b>" for k, v in meta if v is not None)
             + "</div>"]
    if view.canonical is False:
        mt = view.max_tokens
        parts.append(f'<div class="warn" id="not-canonical"><b>Scores are not canonical.</b> They were measured with '
                     f"max_tokens {mt if mt else 'below the benchmark limit'} (CPU profile) instead of the "
                     "benchmark's own limit, and are marked <code>canonical: false</code> in "
                     "metrics.json (†). They are not comparable with published PostTrainBench numbers.</div>")
    for note in view.notes:
        parts.append(f'<div class="warn">{e(note)}</div>')

    parts.append("<h2>Score per iteration</h2>")
    parts.append(f'<img src="{e(png_name)}" alt="score per iteration">' if png_name
                 else "<p>No scores yet: nothing to plot.</p>")
    if view.failures:
        parts.append('<h2>Failure classes per iteration</h2><img id="failures" src="'
                     f'{e(Workspace(view.root).failures_png.name)}" alt="failure classes per iteration">')
    parts += _final_section(view)

    parts.append("<h2>Iterations</h2><table><thead><tr><th>iteration</th><th>stage</th><th>plan objective</th>"
                 "<th>data rows</th><th>method</th><th>score</th><th>Δ vs base</th><th>paired vs best before</th>"
                 "<th>kept</th><th>status</th><th>files</th></tr></thead><tbody>")
    if view.baseline:
        b = view.baseline
        parts.append(_tr([_td("base"), _td("1"), _td("base model, no training"), _td(None), _td(None),
                          _score_cell(b.accuracy, b.canonical), _td(None, num=True), _td(None), _td(None),
                          _td(f"baseline (n={b.n})"), _links_td(_links(view.root, Workspace(view.root).iteration(0)))],
                         "base"))
    for r in view.rows:
        parts.append(_tr([_td(str(r.iteration)), _td(None if r.stage is None else str(r.stage)), _td(r.objective),
                          _td(None if r.rows is None else str(r.rows), num=True), _td(r.method),
                          _score_cell(r.score, r.canonical), _delta_cell(r.delta_vs_base), _paired_cell(r.vs),
                          _kept_cell(r.kept), _td(r.status), _links_td(r.links)]))
    if view.final:
        f = view.final
        delta = f.accuracy - view.baseline.accuracy if view.baseline else None
        parts.append(_tr([_td("final"), _td(None), _td("final_model/ on the full benchmark"), _td(None), _td(None),
                          _score_cell(f.accuracy, f.canonical), _delta_cell(delta), _td(None), _td(None),
                          _td(f"n={f.n}, ± {_fmt(f.stderr)}"), _links_td(_final_links(view.root))], "final"))
    if not view.rows:
        parts.append('<tr><td colspan=11 class="small">no iteration has started yet</td></tr>')
    parts.append("</tbody></table>")
    parts.append('<p class="small">Development scores use the first evaluation samples (the sample floor); the final '
                 "row, when present, is the full benchmark. Rows come from the checkpointed history; "
                 "iterations it does not record yet are rebuilt from their files.</p>")

    if any(r.strategies for r in view.rows):
        parts += _strategy_section(view)
    parts.append("<h2>Where the time went</h2>")
    parts.append(_role_table(view.role_seconds))
    if view.llm_tokens:
        parts.append('<h2 id="tokens">LLM tokens</h2><ul>' + "".join(f"<li>{e(line)}</li>" for line in
                                                                    _token_lines(view)) + "</ul>")
    ws = Workspace(view.root)
    logs = [("experiment log", ws.log_path), ("task definition", ws.task_definition),
            ("run settings", ws.settings_file)]
    links = " · ".join(
        f'<a href="{quote(p.relative_to(view.root).as_posix())}">{e(label)}</a>' for label, p in logs if p.is_file()
    )
    parts.append(
        f'<h2>Files</h2><p>{links or "–"}</p><p class="small">state read from: {e(view.state_source)}; '
        f"workspace {e(str(view.root))}</p></body></html>"
    )
    return "\n".join(parts)


def _strategy_section(view: RunView) -> list[str]:
    """Per strategy of the seed paper's vocabulary: how often it was tried and how often the score moved."""
    from readers.strategies import table
    from roles.strategies import NAMES

    counts = table((r.strategies, bool(r.vs and r.vs.low > 0), bool(r.vs and r.vs.diff > 0), bool(r.kept))
                   for r in view.rows)
    rows = "".join(_tr([_td(f"{code} {NAMES.get(code, '')}"), _td(str(c["tried"]), num=True),
                        _td(str(c["improved"]), num=True), _td(str(c["up"]), num=True), _td(str(c["kept"]), num=True)])
                   for code, c in counts.items())
    return ['<h2 id="strategies">Strategies</h2><table style="width:auto"><thead><tr><th>strategy</th><th>tried</th>'
            "<th>improved (paired 95% interval above 0)</th><th>up (paired difference above 0)</th><th>kept</th>"
            f"</tr></thead><tbody>{rows}</tbody></table>",
            '<p class="small">python -m readers.strategies --memory-dir DIR ... counts the same over many runs.</p>']


def _token_lines(view: RunView) -> list[str]:
    from core.settings import RunSettings

    try:
        settings = RunSettings.model_validate(view.settings)
    except ValueError:  # settings of another version: tokens without prices
        settings = RunSettings(task="-", workspace=view.root)
    return settings.token_lines(view.llm_tokens)


def _paired_cell(c: Any) -> str:
    if c is None:
        return _td(None)
    return (f'<td class=num title="{html.escape(c.text())}">{c.diff:+.3f} [{c.low:+.3f}, {c.high:+.3f}]'
            f"<br><span class=small>{c.better}↑ {c.worse}↓ of {c.n}</span></td>")


def _final_section(view: RunView) -> list[str]:
    """The closing measurement: final_model/ beside the base model on samples no decision saw."""
    f = view.final_result
    if f is None:
        return []
    e = html.escape
    parts = [f'<h2 id="final">Final evaluation ({e(f.kind)})</h2><table style="width:auto"><tbody>']
    rows = []
    if f.model is not None:
        rows.append(("final_model/", f"{f.model.accuracy:.4f} ± {f.model.stderr:.4f} on {f.model.n} samples"
                     + ("" if f.model.canonical else " †")))
    if f.base is not None:
        rows.append(("base model, same samples", f"{f.base.accuracy:.4f} ± {f.base.stderr:.4f}"))
    if f.comparison is not None:
        rows.append(("paired difference (95% interval)", f.comparison.text()))
    rows += [(k, v) for k, v in (("profile", None if f.model is None else "canonical" if f.model.canonical
                                  else f"CPU profile, max_tokens {f.model.max_tokens}: not canonical"),
                                 ("identity", f.identity), ("note", f.note),
                                 ("fallback", "the base model's score stands" if f.fallback else None)) if v]
    parts += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows]
    parts.append("</tbody></table>")
    return parts


def _tr(cells: list[str], cls: str = "") -> str:
    return f'<tr class="{cls}">' + "".join(cells) + "</tr>" if cls else "<tr>" + "".join(cells) + "</tr>"


def _td(text: str | None, num: bool = False) -> str:
    """A cell with escaped text; an en dash for nothing."""
    return f"<td{' class=num' if num else ''}>{html.escape(text) if text else '–'}</td>"


def _links_td(links: dict[str, str]) -> str:
    items = " ".join(f'<a href="{html.escape(href)}">{html.escape(label)}</a>' for label, href in links.items())
    return f"<td class=links>{items or '–'}</td>"


def _final_links(root: Path) -> dict[str, str]:
    final = Workspace(root).final_eval
    return {
        label: quote(f.relative_to(root).as_posix())
        for label, f in (("samples", final / SUMMARY_FILE), ("metrics", final / METRICS_FILE))
        if f.is_file()
    }


def _role_table(role_seconds: dict[str, float]) -> str:
    if not role_seconds:
        return '<p class="small">Not recorded: the checkpoint state has no role_seconds.</p>'
    total = sum(role_seconds.values()) or 1.0
    order = [r for r in ROLE_ORDER if r in role_seconds] + sorted(set(role_seconds) - set(ROLE_ORDER))
    rows = "".join(
        _tr(
            [
                _td(r),
                _td(_clock(role_seconds[r]), num=True),
                _td(f"{100 * role_seconds[r] / total:.1f}%", num=True),
                f'<td><span class="bar" style="width:{max(1, round(300 * role_seconds[r] / total))}px"></span></td>',
            ]
        )
        for r in order
    )
    return (
        f'<table style="width:auto"><thead><tr><th>role</th><th>time</th><th>share</th><th></th></tr></thead>'
        f"<tbody>{rows}<tr><td><b>total</b></td><td class=num><b>{_clock(total)}</b></td><td></td><td></td></tr>"
        "</tbody></table>"
    )


def write_report(workspace: Path) -> Path:
    """Write report.html (and report_score.png when there is a score to plot); returns the HTML path."""
    root = check_workspace(workspace)
    view = load_view(root)
    png = None
    if view.baseline or any(r.score is not None for r in view.rows) or view.final:
        png = plot_scores(view, Workspace(root).report_png).name
    if view.failures:
        plot_failures(view, Workspace(root).failures_png)
    out = Workspace(root).report_html
    out.write_text(render_html(view, png), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m readers.report", description=__doc__.split("\n\n")[0])
    p.add_argument("workspace", type=Path, help="a run folder (runs/<task>-<time>)")
    args = p.parse_args(argv)
    try:
        out = write_report(args.workspace)
    except InputError as e:
        print(e.headline(), file=sys.stderr)
        return EXIT_INPUT
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
