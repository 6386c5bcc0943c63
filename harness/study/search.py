"""The lever search: per scale point of a sweep, the LLC settings that make a decode step fastest,
among way reservations and insertion hints for each traffic class, ranked by whole-step time.

A sweep spec with a ``[search]`` table (``harness.core.settings``: ``finalists``,
``screen_sample_sets``, ``screen_steps``, ``what_if``) gets, after its grid, a search at every
**scale point**: every built-in run of the grid with its LLC's knobs cleared (backbone log x
geometry x context x batch x LLC size x platform). Each point is searched in one task:

1. **Screen.** The point's stream of its first ``screen_steps`` decode steps is generated once,
   set-sampled (1 in ``screen_sample_sets`` groups of sets, ``harness.core.sampling``; the
   largest power of two up to it that the LLC allows), and held in memory; every setting the
   search tries is simulated on it (``harness.cache.simulate``, counts scaled to the stream's
   own) and timed by the platform's step-time model.
2. **Utility monitors** (UCP's UMON, ``harness.cache.umon``): one pass over the same sampled
   stream gives each class's hits in a line-LRU partition of every size at once, exact for
   line-LRU reservations. Every split of the ways between the KV and the indexer keys (the
   weights and the rest sharing what is left, at least one way) is timed from them, and only the
   splits of the best few are tried as reservations: the partitions are pruned before any is
   simulated.
3. **Rounds.** The settings form per-class options (:func:`options`): the weights (normal,
   streaming, confined to one way), the indexer keys (normal, streaming, BIP, persisting at
   ratios placed so that the persisting share of the keys fills 50-95 % of a set-aside, reserved
   ways from the monitors' splits, under LRU or BIP), the KV (normal, streaming, persisting,
   reserved ways from the splits and 1/8, 1/4, 1/2 of the ways under lru, token-lru, streak and
   bip). The product of all of them (:func:`space`) is far too large to simulate, so the search
   screens it in rounds (:meth:`PointSearch.search`): the weights' options alone and the
   KV-only reservations (the best three, and the best the platform allows, are the KV
   reservations carried on); then under the best weights option (and the best the platform
   allows) every option of the indexer keys and every option of the KV, one class at a time;
   then every weights option with the best two of each of the others (and the best two the
   platform allows); then, around the best setting and the best the platform allows, every
   option of one class at a time with the others kept, until neither changes.
4. **Finalists.** The best ``finalists`` screened settings of each family, KV-only (the seed's
   proposal), class-aware within the platform's documented controls
   (``harness.cache.knobstate.allowed``) and class-aware beyond them (with ``what_if``), and the
   unmanaged LLC, become ordinary runs of the sweep (``runs/<id>``, every step, the sweep's own
   set sampling): the report's "What helps" section compares them.

Each point's screen is kept in ``search/<point id>.json``: every setting tried with its screened
step time and misses, the monitors' curves and splits, the finalists' run ids, the seconds each
part took. A re-run reuses a finished point's screen and runs only the finalists still missing.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np

from harness.core.errors import UserError
from harness.core.files import write_text_atomic
from harness.core.settings import SETTINGS
from harness.study.runs import log_dir, log_name, log_ready, run_id

KNOBS = ("reserve_ways", "policy", "whole_token_eviction", "reserve_index", "reserve_weights", "hint_kv",
         "hint_index", "hint_weights", "set_aside", "what_if")
KV_POLICIES = ("lru", "token-lru", "streak", "bip")  # the KV reservation's policies the search tries
INDEX_FILL = (0.5, 0.8, 0.95)  # a persisting index share fills these shares of the set-aside
KV_FILL = (0.5, 1.0)            # and a persisting KV share these (the KV re-read is a part of it)
SPLITS = 3                      # the monitors' best splits tried as reservations
TOP = 2                         # options per class carried into the combinations (and as many allowed)
REFINE = 2                      # passes of one-class-at-a-time changes around the best settings
CLASS_OPTIONS = ("weights", "index", "kv")
CLASS_COLUMNS = ("kv", "kv_write", "index", "weights")


def search_settings(spec) -> dict | None:
    """The spec's ``[search]`` settings with their defaults (None: no search); its values were
    checked with the spec."""
    raw = spec.raw.get("search")
    if raw is None:
        return None
    return {key: f.check(f"search.{key}", raw.get(key, f.default)) for key, f in SETTINGS["search"].items()}


def scale_points(spec) -> dict[str, dict]:
    """The spec's built-in runs with their LLC knobs cleared, by the id of that run: the points
    the search searches (the unmanaged LLC's run config)."""
    from harness.study.spec import canonical_llc

    out = {}
    for run in spec.runs:
        if run["backend"] != "builtin":
            continue
        llc = {k: v for k, v in run["llc"].items() if k not in KNOBS}
        point = {**run, "llc": canonical_llc(llc, run["timing"]["platform"])}
        out.setdefault(run_id(point), point)
    return out


# --- the settings ----------------------------------------------------------------------------

def screen_sample(sets: int, every: int):
    """The largest power-of-two sample of sets up to 1 in ``every`` the LLC allows (None: all)."""
    from harness.core.sampling import SetSample

    every = 1 << (max(1, every).bit_length() - 1)
    while every > 1:
        try:
            return SetSample.for_sets(sets, every)
        except UserError:
            every //= 2
    return None


def set_asides(base, platform) -> tuple[list[int], list[int]]:
    """Set-aside sizes in ways: those the platform allows (its largest, short of the whole LLC, and
    half of it) and those beyond it (a half and three quarters of the ways), each a whole number
    of ways (the model's persisting cap is per set)."""
    knobs = platform.knobs
    limit = min(knobs.persisting_max, base.size) * base.ways // base.size if "persisting" in knobs.hints else 0
    allowed = sorted({a for a in (min(limit, base.ways - 1), limit // 2) if 0 < a < base.ways})
    beyond = sorted({a for a in (base.ways // 2, 3 * base.ways // 4) if a > limit and 0 < a < base.ways})
    return allowed, beyond


def _ratio(x: float) -> float:
    return float(f"{min(1.0, x):.3g}")


def options(base, platform, footprint: dict, splits: list[tuple[int, int]], what_if: bool = True) -> dict:
    """Each class's options (knob dicts) at one scale point: see the module docstring.
    ``footprint``: lines per decode step of the KV (reads and writes) and of the indexer keys;
    ``splits``: (KV ways, index ways) of the monitors' best splits."""
    allowed, beyond = set_asides(base, platform)
    asides = allowed + (beyond if what_if else [])
    way_bytes = base.size // base.ways
    index = [{}, {"hint_index": "streaming"}, {"hint_index": "bip"}]
    kv = [{}, {"hint_kv": "streaming"}]
    for a in asides:
        lines = a * base.sets
        for fill in INDEX_FILL:
            if footprint["index"]:
                index.append({"hint_index": f"persisting:{_ratio(fill * lines / footprint['index']):g}",
                              "set_aside": a * way_bytes})
        for fill in KV_FILL:
            if footprint["kv"]:
                kv.append({"hint_kv": f"persisting:{_ratio(fill * lines / footprint['kv']):g}", "set_aside": a * way_bytes})
    for i in sorted({i for _, i in splits if i}):
        index += [{"reserve_index": i}, {"reserve_index": i, "hint_index": "bip"}]
    for r in sorted({r for r, _ in splits if r} | set(kv_ways(base.ways))):
        kv += [{"reserve_ways": r, "policy": p} for p in KV_POLICIES]
    weights = [{}, {"hint_weights": "streaming"}, {"reserve_weights": 1}]
    return {"weights": _unique(weights), "index": _unique(index), "kv": _unique(kv)}


def kv_ways(ways: int) -> list[int]:
    """The KV-only reservations' sizes: 1/8, 1/4 and 1/2 of the ways."""
    return sorted({w for w in (ways // 8, ways // 4, ways // 2) if w > 0})


def _unique(items: list[dict]) -> list[dict]:
    seen, out = set(), []
    for o in items:
        key = json.dumps(o, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(o)
    return out


def merge(*parts: dict) -> dict | None:
    """The knobs of several classes' options together (None: they disagree on the set-aside)."""
    out: dict = {}
    for part in parts:
        for k, v in part.items():
            if k in out and out[k] != v:
                return None
            out[k] = v
    return out


def space(opts: dict) -> list[dict]:
    """Every combination of the classes' options: the whole space the rounds prune."""
    out = []
    for w, i, k in itertools.product(opts["weights"], opts["index"], opts["kv"]):
        knobs = merge(w, i, k)
        if knobs is not None:
            out.append(knobs)
    return _unique(out)


def make_config(base, knobs: dict):
    """The LLC config of ``base`` with ``knobs`` (what_if on, so that any is made; a UserError
    when the knobs do not go together)."""
    from harness.cache.llc import LLCConfig

    values = {**{k: getattr(base, k) for k in ("reserve_ways", "policy", "whole_token_eviction", "sample_sets")},
              "reserve_ways": 0, "policy": "lru", **knobs, "what_if": True}
    return LLCConfig.make(base.size, base.ways, **values)


# --- screening ---------------------------------------------------------------------------------

class Screen:
    """One scale point's stream of its first ``steps`` decode steps, set-sampled and held in
    memory, and the step time of any LLC config on it."""

    def __init__(self, src, timing, sets: int, steps: int, every: int):
        from harness.core.accesstrace import LineAccesses

        self.timing, self.batch = timing, src.batch
        self.exact = src.line_counts(steps)
        self.phases = src.phases(steps)
        self.steps = int(self.phases.step.nunique())
        self.sample = screen_sample(sets, every)
        self.chunks = []
        for c in src.chunks(as_lines=True, reuse=False, steps=steps, weight_scans=True, sample=self.sample):
            arrays = [getattr(c, f) for f in ("line", "write", "cls", "token", "step", "phase", "request")]
            scans = None if c.scan_lines is None else c.scan_lines.copy()
            self.chunks.append(LineAccesses(*(a.copy() for a in arrays), scans))  # not the stream's buffers

    def footprint(self) -> dict:
        """Line accesses per decode step of the KV (reads and writes) and of the indexer keys."""
        from harness.core.traffic import INDEX, KV, KV_WRITE

        per = self.exact.groupby("cls").lines.sum()
        return {"kv": float(per.get(KV, 0) + per.get(KV_WRITE, 0)) / self.steps,
                "index": float(per.get(INDEX, 0)) / self.steps}

    def __call__(self, cfg) -> dict:
        from harness.cache.simulate import simulate

        r = simulate(self.chunks, cfg, self.timing, bounds=False, phases=self.phases, batch=self.batch,
                     sample=self.sample, exact=self.exact if self.sample else None)
        row = {"step_time_cycles": r["step_time_cycles"], "attention_time_cycles": r["attention_time_cycles"]}
        for name in CLASS_COLUMNS:
            c = r["by_class"].get(name, {})
            row[f"{name}_misses_per_step"] = c.get("misses", 0) / self.steps
            row[f"{name}_hits_per_step"] = c.get("hits", 0) / self.steps
        return row


def split_times(hist: np.ndarray, screen: Screen, ways: int) -> list[dict]:
    """The step time the utility monitors predict for every split of the ways, (KV ways R, index
    ways I) with R + I <= ways - 1: each class hits what its own R or I line-LRU ways would, the
    weights and the rest share the other ways and hit nothing there (a weight scan flushes them),
    no writebacks. Sorted, fastest first."""
    from harness.cache.timing import phase_cycles, phase_time
    from harness.core.traffic import INDEX, KV, KV_WRITE

    ph = screen.phases.reset_index(drop=True)
    n = int(ph.phase.max()) + 1
    hist = np.pad(hist, ((0, max(0, n - len(hist))), (0, 0), (0, 0)))[:n]
    lines = np.zeros((n, 3))  # per phase: KV (reads, writes), index, everything
    for cls, col in ((KV, 0), (KV_WRITE, 0), (INDEX, 1)):
        sub = screen.exact[screen.exact.cls == cls]
        np.add.at(lines[:, col], sub.phase.to_numpy(), sub.lines.to_numpy())
    np.add.at(lines[:, 2], screen.exact.phase.to_numpy(), screen.exact.lines.to_numpy())
    seen = hist.sum(-1)  # sampled accesses per phase and monitor
    hits = np.concatenate([np.zeros((n, 2, 1)), np.cumsum(hist, axis=-1)[..., :ways]], axis=-1)  # [.., w]
    share = np.divide(hits, seen[..., None], out=np.zeros_like(hits, dtype=float), where=seen[..., None] > 0)
    order = ph.phase.to_numpy()
    warm = min(screen.timing.warmup_steps, screen.steps - 1)
    measured = ph.step.to_numpy() >= sorted(ph.step.unique())[warm]
    out = []
    for r in range(ways):
        for i in range(ways - r):
            h = share[order, 0, r] * lines[order, 0] + share[order, 1, i] * lines[order, 1]
            memory, compute = phase_cycles(h, lines[order, 2] - h, np.zeros(len(order)), ph.flops, screen.timing)
            t = phase_time(memory, compute, screen.timing.overlap)
            out.append({"kv_ways": r, "index_ways": i,
                        "step_time_cycles": float(t[measured].sum() / max(1, screen.steps - warm))})
    return sorted(out, key=lambda s: s["step_time_cycles"])


def _best_splits(splits: list[dict], n: int) -> list[tuple[int, int]]:
    """The ``n`` fastest splits that reserve something, and the fastest with only KV or only index
    ways."""
    chosen = [s for s in splits if s["kv_ways"] or s["index_ways"]][:n]
    for only in ("kv_ways", "index_ways"):
        other = "index_ways" if only == "kv_ways" else "kv_ways"
        chosen += [s for s in splits if s[only] and not s[other]][:1]
    return list(dict.fromkeys((s["kv_ways"], s["index_ways"]) for s in chosen))


# --- one point's search ------------------------------------------------------------------------

class PointSearch:
    """The rounds of one scale point's search over a :class:`Screen` (the module docstring)."""

    def __init__(self, base, platform, screen, what_if: bool):
        from harness.cache.knobstate import allowed, family

        self.base, self.platform, self.screen, self.what_if = base, platform, screen, what_if
        self._allowed, self._family = allowed, family
        self.rows: dict[str, dict] = {}

    def run(self, knobs: dict | None, round_: str, parts: tuple = ()) -> dict | None:
        """Screen one setting (once; None when its knobs do not go together, or go beyond the
        platform and the search stays within it)."""
        if knobs is None:
            return None
        key = json.dumps(knobs, sort_keys=True)
        if key in self.rows:
            return self.rows[key]
        try:
            cfg = make_config(self.base, knobs)
        except UserError:
            return None
        ok = self._allowed(cfg, self.platform)
        if not ok and not self.what_if:
            return None
        row = {"knobs": knobs, "round": round_, "parts": list(parts), "family": self._family(cfg), "allowed": ok,
               **self.screen(cfg)}
        self.rows[key] = row
        return row

    def best(self, rows, allowed_only: bool = False, n: int = 1) -> list[dict]:
        rows = [r for r in rows if r and (r["allowed"] or not allowed_only)]
        return sorted(rows, key=_time)[:n]

    def at(self, parts: tuple[str, str, str], round_: str) -> dict | None:
        """Screen the setting of one option per class (``parts``: weights, index, KV, as JSON)."""
        return self.run(merge(*(json.loads(p) for p in parts)), round_, parts)

    def search(self, opts: dict) -> None:
        """The rounds of the module docstring: the weights' options alone and the KV-only
        reservations; then every option of the indexer keys and of the KV under the best weights
        options; the combinations of the best few of each; then, around the best setting and
        the best the platform allows, every option of one class at a time, until neither
        changes (at most ``REFINE`` passes)."""
        keys = {c: [json.dumps(o, sort_keys=True) for o in opts[c]] for c in CLASS_OPTIONS}
        none = "{}"
        self.at((none, none, none), "baseline")
        weights = [self.at((w, none, none), "weights") for w in keys["weights"]]
        reserved = [k for k in keys["kv"] if "reserve_ways" in json.loads(k)]
        kv_only = {k: self.at((none, none, k), "kv-only") for k in reserved}
        ranked = [k for k, _ in sorted(((k, r) for k, r in kv_only.items() if r), key=lambda x: _time(x[1]))]
        carried = ranked[:TOP + 1] + [k for k in ranked if kv_only[k]["allowed"]][:1]
        keys["kv"] = [k for k in keys["kv"] if k not in reserved or k in carried]  # the rounds below carry these
        beam = list(dict.fromkeys(r["parts"][0] for r in self.best(weights, n=1) + self.best(weights, True, 1)))
        top = {}
        for c, slot in (("index", 1), ("kv", 2)):
            rows = {}
            for w in beam:
                for o in keys[c]:
                    parts = [w, none, none]
                    parts[slot] = o
                    row = self.at(tuple(parts), c)
                    if row and (o not in rows or _time(row) < _time(rows[o])):
                        rows[o] = row
            order = sorted(rows, key=lambda o: _time(rows[o]))
            top[c] = list(dict.fromkeys([none, *order[:TOP], *[o for o in order if rows[o]["allowed"]][:TOP]]))
        for parts in itertools.product(keys["weights"], top["index"], top["kv"]):
            self.at(parts, "combined")
        seeds: list = []
        for _ in range(REFINE):
            now = [tuple(r["parts"]) for r in self.best(self.rows.values(), n=1) + self.best(self.rows.values(), True, 1)]
            if now == seeds:
                break
            seeds = now
            for seed in dict.fromkeys(seeds):
                for slot, c in enumerate(CLASS_OPTIONS):
                    for o in keys[c]:
                        parts = list(seed)
                        parts[slot] = o
                        self.at(tuple(parts), "refine")

    def finalists(self, n: int) -> list[dict]:
        """The unmanaged LLC and the best ``n`` of each family: KV-only, class-aware allowed,
        class-aware beyond the platform."""
        rows = list(self.rows.values())
        out = [r for r in rows if r["family"] == "unmanaged"][:1]
        out += self.best([r for r in rows if r["family"] == "kv-only"], n=n)
        aware = [r for r in rows if r["family"] == "class-aware"]
        out += self.best([r for r in aware if r["allowed"]], n=n)
        out += self.best([r for r in aware if not r["allowed"]], n=n)
        return _distinct(out)


def _time(row: dict) -> float:
    return row["step_time_cycles"]


def _distinct(rows: list[dict]) -> list[dict]:
    seen, out = set(), []
    for r in rows:
        key = json.dumps(r["knobs"], sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def finalist_run(point: dict, knobs: dict) -> dict:
    """The sweep run of a finalist: the point with the knobs in its LLC (what_if set only when the
    knobs go beyond the platform, so that an allowed setting's run id does not depend on it)."""
    from harness.cache.platforms import get_platform
    from harness.study.spec import canonical_llc

    platform = point["timing"]["platform"]
    cfg = make_config(_llc(point), knobs)
    llc = {**point["llc"], **{k: getattr(cfg, k) for k in KNOBS}, "what_if": bool(cfg.beyond(get_platform(platform)))}
    return {**point, "llc": canonical_llc(llc, platform)}


def _llc(point: dict):
    from harness.cache.llc import LLCConfig

    return LLCConfig(**point["llc"])


def search_point(folder: str, point: dict, settings: dict) -> dict:
    """Search one scale point (a worker task): screen, write ``search/<point id>.json``, and
    return it. A finished point's file is read back instead."""
    from harness.cache.platforms import get_platform
    from harness.cache.timing import TimingConfig
    from harness.cache.umon import MONITORED, utility
    from trace_gen.stream import StreamSource

    folder = Path(folder)
    path = folder / "search" / f"{run_id(point)}.json"
    if path.exists():
        try:
            done = json.loads(path.read_text())
            if done.get("settings") == settings and done.get("point") == point:
                return done
        except ValueError:
            pass
    if not log_ready(folder, point["decode"]):
        raise UserError(f"index log {log_name(point['decode'])} is missing")
    started = time.time()
    timing = TimingConfig(**point["timing"])
    platform = get_platform(timing.platform)
    base = _llc(point)
    src = StreamSource.from_options(log_dir(folder, point["decode"]), point["stream"])
    steps = max(settings["screen_steps"], timing.warmup_steps + 1)
    screen = Screen(src, timing, base.sets, steps, settings["screen_sample_sets"])
    prepared = time.time()
    hist = utility(screen.chunks, base.sets, base.ways, screen.sample, int(screen.phases.phase.max()) + 1)
    splits = split_times(hist, screen, base.ways)
    monitored = time.time()
    s = PointSearch(base, platform, screen, settings["what_if"])
    opts = options(base, platform, screen.footprint(), _best_splits(splits, SPLITS), settings["what_if"])
    s.search(opts)
    finalists = s.finalists(settings["finalists"])
    curves = {name: np.cumsum(hist[:, m].sum(0))[:base.ways].tolist() for m, name in enumerate(MONITORED)}
    out = {
        "point": point, "settings": settings, "point_id": run_id(point),
        "sample": screen.sample.to_dict() if screen.sample else None, "steps": screen.steps,
        "footprint_lines_per_step": screen.footprint(),
        "umon": {"hits_by_ways": curves, "accesses": {name: int(hist[:, m].sum()) for m, name in enumerate(MONITORED)},
                 "best_splits": splits[:10]},
        "space": len(space(opts)), "screened": list(s.rows.values()),
        "finalists": [{"knobs": r["knobs"], "run_id": run_id(finalist_run(point, r["knobs"]))} for r in finalists],
        "seconds": {"prepare": prepared - started, "monitor": monitored - prepared, "screen": time.time() - monitored,
                    "total": time.time() - started},
    }
    (folder / "search").mkdir(exist_ok=True)
    write_text_atomic(path, json.dumps(out, indent=1))
    return out


# --- the sweep's search ----------------------------------------------------------------------

def execute_search(spec, folder: str | Path, jobs: int | None = None, scheduler: str | None = None,
                   rerun_failed: bool = False, wait: bool = False, echo=print, progress: bool = True) -> dict:
    """Search every scale point of ``spec`` in the sweep ``folder`` (its grid already run: the
    index logs are there), then run the finalists, under the folder's lock. Returns counts:
    ``points`` searched (or read back), ``finalists`` run now, ``failed`` (points or runs),
    ``skipped`` (finalists finished before), and the wall ``seconds`` of the screens and of the
    finalists."""
    from harness.core.progress import progress_bar
    from harness.study.executors import dask_executor, local_executor
    from harness.study.sweep import SweepLock, record_failure, run_state, sim_task

    settings = search_settings(spec)
    if settings is None:
        return {}
    folder = Path(folder).absolute()
    points = scale_points(spec)
    counts = {"points": 0, "finalists": 0, "failed": 0, "skipped": 0}
    with SweepLock(folder, wait):
        executor = dask_executor(scheduler) if scheduler else local_executor(jobs)
        aborted = True
        try:
            started = time.time()
            finals: dict[str, dict] = {}
            todo = {pid: (str(folder), p, settings) for pid, p in points.items() if log_ready(folder, p["decode"])}
            for pid in points.keys() - todo.keys():
                echo(f"search of scale point {pid}: index log {log_name(points[pid]['decode'])} is missing")
                counts["failed"] += 1
            bar = progress_bar(total=len(todo), desc="search", unit="point", disable=not progress)
            for pid, value, error in executor.map(search_point, todo):
                bar.update()
                if error:
                    echo(f"search of scale point {pid} failed: {error}")
                    counts["failed"] += 1
                    continue
                counts["points"] += 1
                for f in value["finalists"]:
                    run = finalist_run(points[pid], f["knobs"])
                    finals[run_id(run)] = run
            bar.close()
            screened = time.time()
            redo = ("missing", "stale", "corrupt", "failed") if rerun_failed else ("missing", "stale", "corrupt")
            runs = {rid: (str(folder), r) for rid, r in finals.items() if run_state(folder, rid) in redo}
            counts["skipped"] = len(finals) - len(runs)
            bar = progress_bar(total=len(runs), desc="finalists", unit="run", disable=not progress)
            for rid, outcome, error in executor.map(sim_task, runs):
                bar.update()
                if error:
                    record_failure(folder, runs[rid][1], {"error": error, "type": "WorkerFailed"})
                ok = not error and outcome and outcome[1] == "ok"
                counts["finalists" if ok else "failed"] += 1
            bar.close()
            aborted = False
        finally:
            executor.close(abort=aborted)
    counts["seconds"] = {"screens": screened - started, "finalists": time.time() - screened}
    return counts


def read_searches(folder: str | Path) -> list[dict]:
    """The screens a sweep's search wrote (``search/*.json``), unreadable ones left out."""
    out = []
    for path in sorted((Path(folder) / "search").glob("*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (ValueError, OSError):
            continue
    return out

