"""Doubly linked lists of integer ids for numba kernels (LRU orders).

``prev``/``nxt`` hold each id's neighbours (-1 at the ends); ``ends[k] = (head, tail)`` of list k
(head = most recent). Several lists can share ``prev``/``nxt`` as long as an id is in one list.
"""

import numba as nb


@nb.njit(inline="always")
def unlink(t, prev, nxt, ends, k):
    p, q = prev[t], nxt[t]
    if p >= 0:
        nxt[p] = q
    else:
        ends[k, 0] = q
    if q >= 0:
        prev[q] = p
    else:
        ends[k, 1] = p


@nb.njit(inline="always")
def push_head(t, prev, nxt, ends, k):
    prev[t] = -1
    nxt[t] = ends[k, 0]
    if ends[k, 0] >= 0:
        prev[ends[k, 0]] = t
    ends[k, 0] = t
    if ends[k, 1] < 0:
        ends[k, 1] = t


@nb.njit(inline="always")
def push_tail(t, prev, nxt, ends, k):
    nxt[t] = -1
    prev[t] = ends[k, 1]
    if ends[k, 1] >= 0:
        nxt[ends[k, 1]] = t
    ends[k, 1] = t
    if ends[k, 0] < 0:
        ends[k, 0] = t


@nb.njit(inline="always")
def pop_tail(prev, nxt, ends, k):
    t = ends[k, 1]
    unlink(t, prev, nxt, ends, k)
    return t
