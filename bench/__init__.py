"""Benchmarks: the relay measured against a minimal pass-through, on loopback, in one command.

``python -m bench.run`` starts the token issuer (a thread of the load generator), the Neo API and
Teams connector emulators (one helper process, :mod:`bench.emu`), the relay (``relay serve``, its
own process) and then the baseline (:mod:`bench.baseline`, its own process), drives both with the
same signed traffic (:mod:`bench.load`) and prints / saves the figures (README "Benchmarks").
"""
