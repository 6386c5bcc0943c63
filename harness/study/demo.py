"""The main job: the whole study on embedded defaults, small enough for a laptop.

Both real backbones decode Python source with the fitted ``dsa`` indexer (its fit ships with the
package: nothing is fitted; k = 128, a 2048-token prompt, 24 steps); each index log is streamed
under the backbone's own geometry, under DeepSeek-V3.2's and under a GQA model's (Llama-3.1-8B),
paged, for one request and for a batch of 8 (the log's request at 8 addresses of its own); the
built-in simulator runs LLCs of 16 and 32 MiB (16 ways) with 0, 4 and 8 ways reserved under line
LRU, token-LRU, token BIP (LRU with insertion at the LRU end, scan-resistant) and streak (keeps
tokens re-selected step after step, admits only stronger ones: the policy closest to MIN below
one step's footprint), and times whole decode steps (weights as each geometry's deployment reads
them) on the H100 platform's memory and compute. Then the report.
`examples/full_sweep.toml` is the lab-sized version of the same study.
"""

DEMO_SPEC = """
[sweep]
name = "demo"
backend = "builtin"

[decode]
backbone = ["smollm2-135m", "gemma3-270m"]
indexer = "dsa"
topk = 128
prompt_tokens = 2048
steps = 24
text = "python-source"

[stream]
geometry = ["native", "deepseek-v3.2", "llama-3.1-8b"]
layout = "paged"
page_tokens = 64
batch = [1, 8]

[llc]
size = ["16MiB", "32MiB"]
ways = 16
reserve_ways = [0, 4, 8]
policy = ["lru", "token-lru", "bip", "streak"]

[timing]
platform = "h100-sxm"
"""
