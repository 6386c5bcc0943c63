"""Doubly linked lists of integer ids for numba kernels (LRU orders).

``prev``/``nxt`` hold each id's neighbours (-1 at the ends); a list is its ``head`` (the most
recent) and ``tail``, which the caller keeps in local variables: the functions return the new
ends. (Keeping the ends in an array instead made an LRU kernel 12x slower: every store to
``prev``/``nxt`` then forced them to be reloaded.) Several lists may share ``prev``/``nxt``.
"""

import numba as nb


@nb.njit(inline="always")
def unlink(t, prev, nxt, head, tail):
    p, q = prev[t], nxt[t]
    if p >= 0:
        nxt[p] = q
    else:
        head = q
    if q >= 0:
        prev[q] = p
    else:
        tail = p
    return head, tail


@nb.njit(inline="always")
def push_head(t, prev, nxt, head, tail):
    prev[t] = -1
    nxt[t] = head
    if head >= 0:
        prev[head] = t
    return t, (t if tail < 0 else tail)


@nb.njit(inline="always")
def push_tail(t, prev, nxt, head, tail):
    nxt[t] = -1
    prev[t] = tail
    if tail >= 0:
        nxt[tail] = t
    return (t if head < 0 else head), t


@nb.njit(inline="always")
def pop_tail(prev, nxt, head, tail):
    t = tail
    head, tail = unlink(t, prev, nxt, head, tail)
    return t, head, tail
