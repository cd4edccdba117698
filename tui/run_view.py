"""The run view: every checkpoint of a training run in one table, with drift sparklines.

``gsvinspect DIR`` / ``gsvinspect open DIR`` / ``gsvinspect demo --run`` show it. The scan
(metadata only) fills the table at once; the drift pass then runs in a thread worker with a
progress bar and fills the Δ columns, the per-row sparkline (the row's trajectory from its base up
to that checkpoint) and the chart under the table (the selected row's group: the model, every
top-level module and every phoneme language over the steps, as sparklines of Δ base, one line
each, which reads at 80x24 and in 16 colours). Quitting cancels the drift pass.

Keys: Enter opens the highlighted checkpoint side by side with its base (or the two marked rows
with each other); Space marks a row (two at most); q quits. The app returns ``("open", a, b)``
for the inspector to run (see :func:`run_run_view`), then the run view comes back with its results.
"""

from __future__ import annotations

import threading
from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, ProgressBar, Static

from gsvinspect.report.scan import epoch_step, pct, short_use, spark


COLUMNS = ("", "file", "stage", "ep", "step", "Δ base", "Δ prev", "health", "trend", "as base")


class RunState:
    """What survives a trip to the inspector and back: the scan, the drift groups."""

    def __init__(self, root: Path, trust: bool = False):
        self.root, self.trust = root, trust
        self.result = None
        self.drift = None
        self.error: str | None = None
        self.cursor = 0                   # the row to come back to after the inspector


class RunApp(App):
    CSS = """
    #title { height: 1; background: $primary; color: $text; }
    #runs { height: 1fr; }
    #chart { height: auto; max-height: 11; border-top: solid $primary; }
    #statusbar { height: 1; }
    #status { width: 1fr; }
    #progress { width: 30; }
    """
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("enter", "open", "Open with base / the 2 marked"),
        Binding("space", "mark", "Mark"),
    ]

    def __init__(self, state: RunState):
        super().__init__()
        self.state = state
        self.cancel = threading.Event()
        self.marked: list[str] = []
        self.rows: list = []            # ScanEntry per table row
        self.drift_by_path: dict = {}   # path -> (DriftGroup, index of the point)
        self.chart = None               # what the chart shows (a rich renderable)

    def compose(self) -> ComposeResult:
        yield Static(Text(f" gsvinspect run · {self.state.root}", style="bold"), id="title")
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static("", id="chart")
        with Horizontal(id="statusbar"):
            yield Static("scanning…", id="status")
            yield ProgressBar(total=None, show_eta=False, id="progress")
        yield Footer()

    def on_mount(self) -> None:
        t = self.query_one("#runs", DataTable)
        for name in COLUMNS:
            t.add_column(name, key=name or "mark", width=24 if name == "file" else None)
        if self.state.result is None:
            self.scan_worker()
        else:
            self.fill_table()
            self.show_drift()
            t.move_cursor(row=min(self.state.cursor, max(0, len(self.rows) - 1)))

    # -- work ---------------------------------------------------------------------------------
    @work(thread=True, exit_on_error=False)
    def scan_worker(self) -> None:
        from gsvinspect.errors import GsvError
        from gsvinspect.triage.drift import DriftCancelled, compute_drift
        from gsvinspect.triage.scan import scan

        try:
            self.state.result = scan([self.state.root], trust=self.state.trust, keep_open=True)
        except GsvError as exc:
            self.state.error = str(exc)
            self.call_from_thread(self.set_status, f"cannot scan: {exc}")
            return
        self.call_from_thread(self.fill_table)

        def progress(done: int, total: int) -> None:
            self.call_from_thread(self.set_progress, done, total)

        try:
            self.state.drift = compute_drift(self.state.result, progress=progress, cancel=self.cancel)
        except DriftCancelled:
            return
        self.call_from_thread(self.show_drift)

    def set_progress(self, done: int, total: int) -> None:
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=max(total, 1), progress=done)
        self.set_status(f"drift: {done / 2**20:.0f} of {total / 2**20:.0f} MiB")

    def set_status(self, text: str) -> None:
        self.query_one("#status", Static).update(Text(text))     # file names are text, never markup

    # -- table --------------------------------------------------------------------------------
    def fill_table(self) -> None:
        t = self.query_one("#runs", DataTable)
        t.clear()
        res = self.state.result
        self.rows = [e for _, _, es in res.groups() for e in es]
        for e in self.rows:
            t.add_row(*self._cells(e), key=str(e.path))
        n_bad = len(res.problems)
        self.set_status(f"{len(self.rows)} files, {n_bad} unreadable · drift running…")

    def _cells(self, e) -> list:
        mark = "●" if str(e.path) in self.marked else " "
        name = e.path.name   # the stage column and the title say where it lives
        if len(name) > 24:
            name = name[:11] + "…" + name[-12:]
        name = Text(name)    # a str cell is read as markup: 'G_[b]50.pth' showed as 'G_50.pth'
        if not e.ok:
            return [mark, name, "error", "", "", "", "", Text(e.error or "", style="red"), "", ""]
        g_i = self.drift_by_path.get(str(e.path))
        d_base = d_prev = trend = ""
        health = Text("")
        if g_i is not None:
            g, i = g_i
            p = g.points[i]
            d_base, d_prev = pct(p.from_base), pct(p.from_prev)
            trend = spark([q.from_base for q in g.points[: i + 1]])
            health = _health(p)
        ep, st = epoch_step(e)   # '*' = from the file name, as `scan` marks it
        return [mark, name, e.stage, ep, st, d_base, d_prev, health, trend, short_use(e)]

    def show_drift(self) -> None:
        self.drift_by_path = {p.path: (g, i) for g in self.state.drift or [] for i, p in enumerate(g.points)}
        t = self.query_one("#runs", DataTable)
        for e in self.rows:
            for col, val in zip(["mark", *COLUMNS[1:]], self._cells(e)):
                # the Δ, health and trend columns were sized to their headers before drift came
                t.update_cell(str(e.path), col, val, update_width=True)
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=1, progress=1)
        unhealthy = sum(1 for g in self.state.drift or [] for p in g.points if not p.healthy)
        self.set_status(f"{len(self.rows)} files · {unhealthy} with a problem · Enter: open")
        self.update_chart()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.update_chart()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:   # Enter on the table
        self.action_open()

    def current(self):
        t = self.query_one("#runs", DataTable)
        if not self.rows or t.cursor_row is None or t.cursor_row >= len(self.rows):
            return None
        return self.rows[t.cursor_row]

    def update_chart(self) -> None:
        self.chart = chart_for(self.current(), self.drift_by_path)
        self.query_one("#chart", Static).update(self.chart)

    # -- actions ------------------------------------------------------------------------------
    def action_mark(self) -> None:
        e = self.current()
        if e is None or not e.ok:
            return
        key = str(e.path)
        if key in self.marked:
            self.marked.remove(key)
        else:
            self.marked = (self.marked + [key])[-2:]
        t = self.query_one("#runs", DataTable)
        for row in self.rows:
            t.update_cell(str(row.path), "mark", "●" if str(row.path) in self.marked else " ")

    def action_open(self) -> None:
        self.state.cursor = self.query_one("#runs", DataTable).cursor_row or 0
        if len(self.marked) == 2:
            self.exit(("open", Path(self.marked[0]), Path(self.marked[1])))
            return
        e = self.current()
        if e is None or not e.ok:
            return
        if e.base is None:
            self.set_status(f"{e.path.name}: no base in the scan; mark two rows with Space to compare them")
            return
        self.exit(("open", Path(e.base), Path(e.path)))

    async def action_quit(self) -> None:
        self.cancel.set()
        self.exit(None)


def _health(p) -> Text:
    bits = [f"{n} {v}" for n, v in (("NaN", p.nan), ("Inf", p.inf), ("ovf16", p.ovf16)) if v]
    if p.jump:
        bits.append(f"jump ×{p.jump_ratio:.0f}")
    return Text(", ".join(bits), style="bold red") if bits else Text("ok", style="green")


def chart_for(entry, drift_by_path: dict):
    """The selected row's group over the steps: model, modules, languages (Δ base sparklines)."""
    if entry is None:
        return ""
    g_i = drift_by_path.get(str(entry.path))
    if g_i is None:
        return Text(f"{entry.path.name}: no drift (pretrained file, unreadable, or still running)", style="dim")
    g, i = g_i
    mods = list(dict.fromkeys(m for p in g.points for m in p.modules))
    langs = list(dict.fromkeys(m for p in g.points for m in p.languages))
    left = _spark_table("module", [("model", [p.from_base for p in g.points])] +
                        [(m, [p.modules.get(m, (None, None))[0] for p in g.points]) for m in mods], i)
    right = _spark_table("language", [(m, [p.languages.get(m, (None, None))[0] for p in g.points]) for m in langs], i)
    title = Text(f"{g.experiment} · {g.stage} · {g.model}: Δ base over {len(g.points)} checkpoints "
                 f"(yellow: this one)", style="bold")
    grid = Table.grid(padding=(0, 3))
    grid.add_row(left, right if langs else "")
    return Group(title, grid)


def run_run_view(root: Path, *, trust: bool = False, mouse: bool = True, open_pair=None) -> int:
    """The run view, and the inspector for each pair chosen in it, until the user quits."""
    state = RunState(Path(root), trust)
    try:
        while True:
            choice = RunApp(state).run(mouse=mouse)
            if not choice or state.result is None:
                return 0
            _, a, b = choice
            if open_pair is not None:
                open_pair(a, b)
    finally:
        if state.result is not None:
            state.result.close()


def _spark_table(head: str, rows, i: int) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column(head, max_width=18, no_wrap=True, overflow="ellipsis")
    table.add_column("trend", no_wrap=True)
    table.add_column("here", justify="right")
    for name, vals in rows:
        line = Text()
        for j, ch in enumerate(spark(vals)):
            line.append(ch, style="bold yellow" if j == i else "cyan")
        table.add_row(name, line, pct(vals[i]))
    return table
