"""The SFT mix builder: weighted mixing of chat datasets with exact and near dedup and decontamination, streamed.

    from data_gen.mix import build_mix, MixSource, Dedup, Decontam
    build_mix([MixSource("parquet:runs/r/distill/dataset", weight=0.7, domain="reasoning"),
               MixSource("jsonl:chat.jsonl", weight=0.3, domain="chat")],
              out_dir="mix/dataset", size=1_500_000, seed=0, tokenizer="embedded", max_tokens=4096)

Modules: `options` (the settings, shared with the `mix` stage), `readers` (sources -> chunks of normalised rows),
`quality` (chat format, token length), `hashing` (exact hashes, MinHash, LSH), `decontam` (eval n-gram index),
`scan` (the parallel per-chunk pass), `pool` (dedup over the whole input), `sample` (weights, upsampling,
shuffle), `write` (sharded Parquet, parallel), `workers` (the process pool both passes share), `report` (card,
plot, removed rows, metrics), `build` (`build_mix`).
Importing this package loads only the options; the rest loads on first use, so the CLI starts fast.
"""

from __future__ import annotations

from typing import Any

from data_gen.mix.options import Decontam, Dedup, MixSource

__all__ = ["Decontam", "Dedup", "MixResult", "MixSource", "build_mix"]


def __getattr__(name: str) -> Any:
    if name in ("build_mix", "MixResult"):
        from data_gen.mix import build

        return getattr(build, name)
    raise AttributeError(f"module 'data_gen.mix' has no attribute '{name}'")
