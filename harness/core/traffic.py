"""Traffic classes of memory requests (DESIGN.md) and their integer codes in kernels."""

import numpy as np

# Code = index. kv and kv_write are the KV classes that may allocate in the reserved ways.
TRAFFIC_CLASSES = ("kv", "kv_write", "index", "weights", "other")
KV, KV_WRITE, INDEX, WEIGHTS, OTHER = range(len(TRAFFIC_CLASSES))
CLASS_CODE = {name: code for code, name in enumerate(TRAFFIC_CLASSES)}
LINE_BYTES = 64
LINE_SHIFT = 6


def is_kv_code(codes: np.ndarray) -> np.ndarray:
    return codes <= KV_WRITE
