"""The benchmarks' data (no code): `ech0_moe.benchmarks` once installed, so `ech0-moe bench` finds it."""
