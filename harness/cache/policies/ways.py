"""How a policy runs in the reserved ways of the set-associative LLC (``harness.cache.llc``): the
tables the LLC kernel keeps for it, and the hooks through which it ranks resident tokens.

Every resident token of the reserved ways has one record, a row of ``records`` (its fields
below); the kernel evicts the line whose token has the smallest ``F_KEY`` (ties: the lowest
way), and with whole-token eviction every other resident line of that token too. A policy keeps
``F_KEY`` up to date through its hooks (:class:`ReservedWays`). The tables a hook may be given:

- ``records``: fields ``F_TIME`` .. ``F_KEY`` are the kernel's, those from ``F_OWN`` on the
  policy's own;
- ``g``: the policy's global registers (``N_GLOBALS``);
- ``tkeys``, ``tvals``: the hash table of resident tokens (token id -> ``tvals[:, 0]``, its record);
- ``hkeys``, ``hvals``: a history of every token read, two values per token
  (``ReservedWays.history``);
- ``layer_ends``: one list head per layer (``ReservedWays.layer_lists``).
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import sys
import types

import numba as nb
from numba.core.dispatcher import Dispatcher

from harness.cache import hashtab

SEQ = 1 << 40       # keys that combine a small priority with an access time: prio * SEQ + time

# record fields: latest access (the kernel's time: one tick per access), first resident line
# and resident lines (the kernel's list of the token's lines), token id, victim key; then the
# policy's own fields
F_TIME, F_HEAD, F_COUNT, F_TOKEN, F_KEY = range(5)
F_OWN = 5
N_FIELDS = 9        # F_OWN .. 8: four fields of the policy's own
N_GLOBALS = 4       # a policy's global registers g
N_LAYERS = 1 << 16  # layer ids in token ids are 16 bits: layer_ends has one list head per layer


@nb.njit(inline="always")
def layer_of(tok):
    """The layer of a token id (trace_gen's ``layer << 32 | position``; 0 for a kv line without
    a token, whose id the kernel makes negative)."""
    return (tok >> 32) & 0xFFFF if tok >= 0 else 0


@nb.njit(inline="always")
def history_entry(tok, hkeys, hvals):
    """The history entry of token ``tok``, and 1 if it was added now (its values zero), else 0."""
    e = hashtab.find(hkeys, tok)
    if e >= 0:
        return e, 0
    return hashtab.insert(hkeys, hvals, tok), 1


# The default hooks: nothing happens.
@nb.njit(inline="always")
def no_touch(rec, records, g, now, new_read):
    pass


@nb.njit(inline="always")
def no_insert(rec, tok, records, g, hkeys, hvals, layer_ends, now):
    pass


@nb.njit(inline="always")
def no_read(tok, step, records, g, tkeys, tvals, hkeys, hvals, layer_ends, now, kv_lines, reserved_lines):
    return 0


@nb.njit(inline="always")
def no_eviction(key, g):
    pass


@nb.njit(inline="always")
def never_refuse(tok, victim, key, records, hkeys, hvals, kv_lines, reserved_lines):
    return False


@nb.njit(inline="always")
def no_release(rec, records, layer_ends):
    pass


_HOOKS = ("touch", "insert", "on_read", "before_eviction", "refuse", "release")
_PACKAGE = __name__.split(".")[0]
_registered: dict[str, ReservedWays] = {}


class ReservedWays(types.ModuleType):
    """The hooks a policy gives the LLC kernel, which calls them at fixed points of an access
    (the tables as in this module's docstring; ``now``: the kernel's time, one tick per access;
    hooks not given do nothing):

    - ``touch(rec, records, g, now, new_read)``: a kv line of the resident token of record
      ``rec`` was accessed (a hit, or a fill of another of its lines); ``new_read``: the line is
      the first of a token read, so a policy that sees one reference per read (as its fully
      associative version does) acts only then: the later lines of a read that inserted the
      token must not promote it;
    - ``insert(rec, tok, records, g, hkeys, hvals, layer_ends, now)``: token ``tok`` became
      resident in the new record ``rec``;
    - ``on_read(tok, step, records, g, tkeys, tvals, hkeys, hvals, layer_ends, now, kv_lines,
      reserved_lines) -> int``: a read of token ``tok`` starts (its first ``kv`` line, hit or
      miss, at decode step ``step``; ``kv_lines``: ``kv`` line accesses so far, this one
      included; ``reserved_lines``: sets x reserved ways); returns the number of tokens it added
      to the history (the kernel grows the table between chunks);
    - ``before_eviction(key, g)``: a miss found its region full; the victim's key is ``key``;
    - ``refuse(tok, victim, key, records, hkeys, hvals, kv_lines, reserved_lines) -> bool``:
      then, True keeps the missed line of ``tok`` out of the cache (a bypass) instead of
      evicting the line of record ``victim``;
    - ``release(rec, records, layer_ends)``: record ``rec`` is dropped (its token's last line left).

    A policy class that runs in the reserved ways holds its hooks as ``reserved_ways =
    ReservedWays(...)`` (which takes the class's ``name``). A policy without an ``insert`` hook
    keeps no token records: the reserved ways are line LRU, the kernel's own replacement.
    ``history``: the policy keeps a history of every token read (``hkeys``/``hvals``);
    ``layer_lists``: it needs ``layer_ends``; ``initial_g``: the initial values of its first
    global registers (the rest start at 0).

    Each hook is a numba function compiled with ``inline="always"``; the kernel factory
    (``harness.cache.llc``) compiles one kernel per policy with the policy's ``ReservedWays``
    as a closure constant. It is a module object because numba inlines a call through a
    module's attribute (``hooks.touch(...)``), not through a tuple's or a class's, and it
    pickles as its name and the hash of its hooks' source files because numba's disk cache
    keys a closure's kernel by its pickled closure: so each policy's kernel is cached once,
    and recompiled after an edit of its hooks (numba itself watches only llc.py).
    """

    def __init__(self, *, touch=None, insert=None, on_read=no_read, before_eviction=no_eviction,
                 refuse=never_refuse, release=no_release, history: bool = False, layer_lists: bool = False,
                 initial_g: tuple[int, ...] = ()):
        super().__init__(__name__)
        if touch is not None and insert is None:
            raise TypeError("reserved ways: a touch hook without an insert hook")
        if len(initial_g) > N_GLOBALS:
            raise ValueError(f"reserved ways: {len(initial_g)} globals, at most {N_GLOBALS}")
        self.name = ""
        self.tokens = insert is not None
        self.touch, self.insert = touch or no_touch, insert or no_insert
        self.on_read, self.before_eviction, self.refuse, self.release = on_read, before_eviction, refuse, release
        self.history, self.layer_lists, self.initial_g = history, layer_lists, tuple(initial_g)

    def __set_name__(self, owner, attribute) -> None:
        """Named after the policy class that holds it, once."""
        if self.name or owner.name in _registered:
            raise ValueError(f"reserved ways of {owner.name}: defined twice")
        self.name = owner.name
        self.__name__ = f"{__name__}:{self.name}"
        _registered[self.name] = self

    def __repr__(self) -> str:
        return f"<ReservedWays {self.name}>"

    def __reduce__(self):
        return _lookup, (self.name, self.fingerprint())

    def fingerprint(self) -> str:
        """A hash of the source the hooks compile from (``_source_files``)."""
        digest = hashlib.sha256()
        for path in sorted(_source_files([getattr(self, h) for h in _HOOKS])):
            with open(path, "rb") as f:
                digest.update(f.read())
        return digest.hexdigest()


def _lookup(name: str, fingerprint: str) -> ReservedWays:
    return _registered[name]


def _source_files(functions: list[Dispatcher]) -> set[str]:
    """The source files of the modules that define ``functions`` and the jitted functions they
    call, and of the project modules those modules import from (numba freezes the constants
    they take from them too)."""
    modules, seen, todo = set(), set(), list(functions)
    while todo:
        fn = todo.pop()
        if fn not in seen:
            seen.add(fn)
            modules.add(sys.modules[fn.py_func.__module__])
            todo += [v for v in map(fn.py_func.__globals__.get, fn.py_func.__code__.co_names) if isinstance(v, Dispatcher)]
    files = set()
    for module in modules:
        path = inspect.getsourcefile(module)
        files.add(path)
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == _PACKAGE:
                for alias in node.names:  # a submodule, or a name of the module
                    source = sys.modules.get(f"{node.module}.{alias.name}") or sys.modules[node.module]
                    files.add(inspect.getsourcefile(source))
    return files
