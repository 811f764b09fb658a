"""cpu_pool.c: the C worker threads the CPU kernels split their products over."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from tealtab.engine import cpu_fused, cpu_quant, cpu_rows, cpu_sparse, quantization

pytestmark = pytest.mark.skipif(cpu_rows.library() is None, reason="no C compiler for the CPU kernels")


def _products(seed: int):
    """A few products of each kernel that splits over the pool, as (name, call)."""
    torch.manual_seed(seed)
    w = torch.randn(1200, 640)
    packed, packed_t = cpu_rows.pack(w), cpu_sparse.pack_input_major(w)
    q = quantization.quantize(w, "int8")
    i8 = cpu_quant.int8_input_major(q.codes, q.scales)
    blocks = cpu_quant.int8_blocks(q.codes, q.scales)
    x = torch.randn(3, 640)
    qa, pk, pv = torch.randn(2, 4, 1, 64), torch.randn(1, 700, 64), torch.randn(1, 700, 64)
    gk, gv = torch.randn(2, 1, 9, 64), torch.randn(2, 1, 9, 64)
    return [
        ("bf16", lambda: cpu_rows.rows_times_weight(x, packed, 1200)),
        ("bf16 sparse", lambda: cpu_sparse.sparse_rows_times_weight(x, packed_t, 1200, 0.3)),
        ("int8 sparse", lambda: cpu_quant.int8_rows(x, *i8, 1200, 0.3)),
        ("int8 blocks", lambda: cpu_quant.int8_block_rows(x, *blocks, 1200)),
        ("attention", lambda: cpu_fused.decode_attention(qa, pk, pv, gk, gv, 0, 0.125)),
    ]


def test_the_pool_runs_on_every_thread_torch_uses():
    assert cpu_rows.library().tealtab_pool_threads() == cpu_rows._threads == max(1, torch.get_num_threads())


def test_callers_on_two_threads_get_the_bits_of_one_caller(monkeypatch):
    """One caller owns the pool; a second one meanwhile runs its parts itself. Neither
    changes the other's results."""
    monkeypatch.setattr(cpu_rows, "SPLIT_MIN_WORK", 0)
    monkeypatch.setattr(cpu_sparse, "SPLIT_MIN_WORK", 0)
    monkeypatch.setattr(cpu_quant, "SPLIT_MIN_WORK", 0)
    jobs = [_products(seed) for seed in (1, 2)]
    want = [[call().clone() for _, call in products] for products in jobs]
    failures: list[str] = []

    def hammer(k: int) -> None:
        for _ in range(60):
            for (name, call), expected in zip(jobs[k], want[k]):
                if not torch.equal(call(), expected):
                    failures.append(f"caller {k}: {name}")
                    return

    threads = [threading.Thread(target=hammer, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_workers_asleep_after_an_idle_spell_take_the_next_product(monkeypatch):
    monkeypatch.setattr(cpu_rows, "SPLIT_MIN_WORK", 0)
    (_, call), *_ = _products(3)
    first = call().clone()
    time.sleep(0.05)  # longer than the workers spin: they wait on the futex now
    assert torch.equal(call(), first)


def _cpu_ticks_of_other_threads() -> int:
    """utime + stime (clock ticks) of this process's threads other than the calling one."""
    me = threading.get_native_id()
    total = 0
    for task in os.listdir("/proc/self/task"):
        if int(task) == me:
            continue
        try:
            with open(f"/proc/self/task/{task}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux's /proc")
def test_an_idle_pool_uses_no_cpu(monkeypatch):
    """The workers spin a few milliseconds after a product, then sleep: an idle server costs nothing."""
    monkeypatch.setattr(cpu_rows, "SPLIT_MIN_WORK", 0)
    (_, call), *_ = _products(4)
    for _ in range(20):
        call()
    time.sleep(0.05)  # past the spin
    before = _cpu_ticks_of_other_threads()
    time.sleep(0.5)
    assert _cpu_ticks_of_other_threads() - before <= 3  # a spinning worker would take ~50 ticks
