"""Benchmarks, one module each, listed in one registry (`registry.BENCHMARKS`); importing this
package imports none of them, so their shared helpers (`common`) stay light."""
