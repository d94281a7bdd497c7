"""Rows per second of the transaction generator, against a baseline measured in the same run.

The baseline is the floor for any generator of this table: drawing the same number of
float32 values with NumPy and wrapping them into an Arrow table, with no distributions,
no label model and no cross-feature structure. The ratio says how much the realism costs.

    python bench/bench_generate.py [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa

from fraudops import schema
from fraudops.data.generate import generate_transactions


def baseline(n: int) -> pa.Table:
    rng = np.random.default_rng(0)
    block = rng.standard_normal((schema.N_FEATURES, n), dtype=np.float32)
    return pa.Table.from_arrays([pa.array(col) for col in block], names=list(schema.FEATURE_NAMES))


def best_of(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    generate_transactions(1_000)  # warm imports
    t_gen = best_of(lambda: generate_transactions(args.rows, seed=1), args.repeat)
    t_base = best_of(lambda: baseline(args.rows), args.repeat)
    print(f"rows={args.rows:,} features={schema.N_FEATURES}")
    print(f"generator : {t_gen:6.2f} s  {args.rows / t_gen:12,.0f} rows/s")
    print(f"baseline  : {t_base:6.2f} s  {args.rows / t_base:12,.0f} rows/s  (raw float32 normals -> Arrow)")
    print(f"ratio generator/baseline throughput: {t_base / t_gen:.2f}")


if __name__ == "__main__":
    main()
