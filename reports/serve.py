"""Browse every study under a folder: an index page served on 127.0.0.1 (stdlib http.server),
each study's report built on demand and cached until its journal changes.

    >>> from reports.serve import serve
    >>> serve("runs", port=0)          # prints the URL, blocks until Ctrl-C

Only studies the index found can be opened (the URL names an index entry, never a path), and
nothing under the folder is written.
"""

from __future__ import annotations

import html
import os
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from nas.util import one_line

from .data import JOURNAL_NAME, ReportError

MAX_DEPTH = 6
SKIP_DIRS = {"weights", "__pycache__", "node_modules"}


@dataclass
class Entry:
    run: str            # run directory relative to the root ("." for the root itself)
    study: str
    n_trials: int
    states: dict
    objectives: str
    started: str
    modified: float


class StudyIndex:
    """The studies under `root`: every run directory (a folder with a `study.log`) and each study
    its journal holds. Re-scanned on each index request; a journal is re-read only when it changed."""

    def __init__(self, root):
        self.root = Path(root).resolve()
        self._summaries: dict[Path, tuple[tuple, list[Entry]]] = {}
        self._reports: dict[tuple[str, str], tuple[tuple, bytes]] = {}
        self._lock = threading.Lock()

    def run_dirs(self) -> list[Path]:
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            depth = len(Path(dirpath).relative_to(self.root).parts)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS
                                 and depth < MAX_DEPTH)
            if JOURNAL_NAME in filenames:
                found.append(Path(dirpath))
        return found

    @staticmethod
    def _stamp(run_dir: Path) -> tuple:
        st = (run_dir / JOURNAL_NAME).stat()
        return (st.st_mtime_ns, st.st_size)

    def entries(self) -> list[Entry]:
        out = []
        for run_dir in self.run_dirs():
            try:
                stamp = self._stamp(run_dir)
            except OSError:
                continue
            cached = self._summaries.get(run_dir)
            if cached is None or cached[0] != stamp:
                cached = (stamp, self._read(run_dir, stamp))
                self._summaries[run_dir] = cached
            out.extend(cached[1])
        return out

    def _read(self, run_dir: Path, stamp: tuple) -> list[Entry]:
        import optuna

        from nas import storage as _storage

        rel = run_dir.relative_to(self.root).as_posix() or "."
        try:
            storage, _, _, _ = _storage.open_storage(run_dir)
            entries = []
            for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
                study = optuna.load_study(study_name=s.study_name, storage=storage)
                states: dict[str, int] = {}
                for t in study.get_trials(deepcopy=False):
                    states[t.state.name] = states.get(t.state.name, 0) + 1
                names = ", ".join(o.name for o in _storage.study_objectives(study))
                started = study.user_attrs.get("started_at") or (
                    s.datetime_start.isoformat(timespec="seconds") if s.datetime_start else "")
                entries.append(Entry(rel, s.study_name, s.n_trials, states, names, str(started), stamp[0] / 1e9))
            return entries
        except Exception as exc:  # noqa: BLE001  (an unreadable journal is listed, not fatal)
            why = str(exc) if isinstance(exc, _storage.StorageError) else one_line(exc)
            return [Entry(rel, "(unreadable)", 0, {}, why, "", stamp[0] / 1e9)]

    def find(self, run: str, study: str) -> Entry | None:
        for e in self.entries():
            if e.run == run and e.study == study:
                return e
        return None

    def report(self, entry: Entry) -> bytes:
        """The report's HTML, rebuilt when the journal changed since the last build."""
        from . import render_report
        from .data import load_study_data

        run_dir = self.root / entry.run
        with self._lock:  # one build at a time: they are CPU-bound
            stamp = self._stamp(run_dir)
            cached = self._reports.get((entry.run, entry.study))
            if cached is not None and cached[0] == stamp:
                return cached[1]
            sd = load_study_data(run_dir, study_name=entry.study)
            body = render_report(sd).encode("utf-8")
            self._reports[(entry.run, entry.study)] = (stamp, body)
            return body


def _index_html(index: StudyIndex) -> str:
    from .page import _CSS, _JS_MAIN

    rows = []
    entries = index.entries()
    for e in entries:
        q = urllib.parse.urlencode({"run": e.run, "study": e.study})
        states = " ".join(f'<span class="chip s-{k.lower()}"><b>{k}</b> {v}</span>' for k, v in sorted(e.states.items()))
        link = (f'<a href="/report?{html.escape(q)}">{html.escape(e.study)}</a>'
                if not e.study.startswith("(unreadable") else html.escape(e.study))
        rows.append(f"<tr><td><code>{html.escape(e.run)}</code></td><td>{link}</td>"
                    f'<td class="num" data-v="{e.n_trials}">{e.n_trials}</td><td>{states}</td>'
                    f"<td>{html.escape(e.objectives)}</td><td>{html.escape(e.started)}</td>"
                    f'<td data-v="{e.modified}">{time.strftime("%Y-%m-%d %H:%M", time.localtime(e.modified))}</td></tr>')
    heads = "".join(f'<th data-num="{int(num)}">{name}<span class="arrow"></span></th>' for name, num in (
        ("run directory", False), ("study", False), ("trials", True), ("states", False), ("objectives", False),
        ("started", False), ("journal modified", True)))
    body = (f'<table class="sortable"><thead><tr>{heads}</tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>") if rows else \
        f'<p class="note">No run directory (a folder with {JOURNAL_NAME}) under this folder yet.</p>'
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>overlock-nas studies</title>"
            f"<link rel=\"icon\" href=\"data:,\"><style>{_CSS}</style></head><body><header class=\"top\"><h1>OverLoCK NAS · studies</h1>"
            f"<div class=\"sub\">{len(entries)} studies under {html.escape(str(index.root))} · reports are built "
            "when opened (a 1,000-trial study takes a few seconds) and rebuilt when the study changes"
            f"</div></header><main><section>{body}</section></main><script>{_JS_MAIN}</script></body></html>")


class _Handler(BaseHTTPRequestHandler):
    index: StudyIndex  # set on the subclass made by make_server

    def log_message(self, fmt, *args):  # quiet: the CLI prints the URL, not every request
        pass

    def _send(self, code: int, body: bytes, ctype: str = "text/html; charset=utf-8"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, code: int, message: str):
        text = (f"<!DOCTYPE html><html><body style=\"font-family:sans-serif;margin:40px\"><h2>{code}</h2>"
                f"<p>{html.escape(message)}</p><p><a href=\"/\">back to the index</a></p></body></html>")
        self._send(code, text.encode())

    def do_HEAD(self):  # noqa: N802
        self.do_GET()

    def do_GET(self):  # noqa: N802
        url = urllib.parse.urlsplit(self.path)
        if url.path in ("/", "/index.html"):
            return self._send(200, _index_html(self.index).encode())
        if url.path == "/report":
            q = urllib.parse.parse_qs(url.query)
            run, study = q.get("run", [""])[0], q.get("study", [""])[0]
            entry = self.index.find(run, study)
            if entry is None:
                return self._error(404, f"no study {study!r} in run directory {run!r} under this folder")
            try:
                return self._send(200, self.index.report(entry))
            except ReportError as exc:
                return self._error(500, str(exc))
            except Exception as exc:  # noqa: BLE001  (one line for the browser, keep serving)
                return self._error(500, f"building the report failed: {one_line(exc)}")
        return self._error(404, f"nothing at {url.path}")


def make_server(root, port: int = 0, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """An HTTP server (not yet serving) for the studies under `root`; `port=0` picks a free port."""
    if not (host.startswith("127.") or host in ("localhost", "::1")):
        raise ReportError(f"host={host!r}: the report server binds loopback addresses only (127.x.x.x)")
    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"{root}: no such folder")
    handler = type("Handler", (_Handler,), {"index": StudyIndex(root)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve(root, port: int = 0, host: str = "127.0.0.1", open_browser: bool = False, echo=print) -> None:
    """Serve the index of `root` until interrupted (Ctrl-C)."""
    server = make_server(root, port, host)
    url = f"http://{server.server_address[0]}:{server.server_address[1]}/"
    echo(f"serving the studies under {Path(root).resolve()} at {url}  (Ctrl-C to stop)")
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
