"""How many requests of a shape the exact KV pool admits at once. Pure.

vLLM allocates KV blocks as a request's tokens arrive and preempts when none are free. With fixed
input I and output O, a running request holds I + O/2 tokens on average over its life, I + O at
its end. So a load whose mean demand (C x (I + O/2), in blocks) exceeds the pool cannot run
without queueing or preemption: it is over KV capacity, and the admissible concurrency is what
the pool holds at that mean. Below the strict figure (every request at I + O at once) no request
is ever preempted; between the two, preemption is possible near the end of outputs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KVAdmission:
    steady: int
    """Requests the pool holds at their mean length I + O/2 (capped by max_num_seqs)."""
    strict: int
    """Requests the pool holds at their full length I + O (no preemption at all)."""
    max_num_seqs: int


def _blocks(tokens: float, block_size: int) -> int:
    return max(1, -(-int(tokens) // block_size))


def admission(num_blocks: int, block_size: int, max_num_seqs: int, input_len: int, output_len: int) -> KVAdmission:
    steady = num_blocks // _blocks(input_len + output_len / 2, block_size)
    strict = num_blocks // _blocks(input_len + output_len, block_size)
    return KVAdmission(min(steady, max_num_seqs), min(strict, max_num_seqs), max_num_seqs)
