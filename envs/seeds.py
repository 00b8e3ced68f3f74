"""Every reset-seed range the toolkit uses, in one place, so no two uses can overlap.

A number that selects something (an expert checkpoint, a hyperparameter, a damping) must never be
measured again on the seeds it was selected on. Each use below owns a disjoint range; episode ``i``
of a use is reset with ``start + i``.

=====================  ==============================  =============================================
use                    range                           who
=====================  ==============================  =============================================
demonstrations         ``DEMO_SEED`` 0 .. 9,999        ``collect --seed`` (default 0), ``compare``
expert manifest        ``EXPERT_MANIFEST`` 10,000 ..   the 20 episodes reported in ``manifest.json``
expert test check      ``EXPERT_CHECK`` 20,000 ..      the short episodes the test suite replays
benchmarks             ``BENCHMARK_SEED`` 50,000 ..    ``benchmarks/*`` that roll out episodes
policy evaluation      ``POLICY_EVAL`` 1,000,000 ..    ``eval``, ``video``, ``compare`` (default)
tuning                 ``TUNING`` 2,000,000 ..         sweeps that choose a hyperparameter
expert selection       ``EXPERT_SELECTION`` 3,000,000  periodic evaluation while an expert trains
replication demos      ``REPLICATION_DEMO_SEED`` 500k  ``compare --replicate``: fresh demonstrations
replication            ``REPLICATION`` 4,000,000 ..    ``compare --replicate``: fresh evaluation seeds
DAgger rollouts        ``DAGGER`` 5,000,000 ..         ``dagger``, ``compare --remedies dagger:R``: the
                                                       learner's episodes that the expert relabels
=====================  ==============================  =============================================

Demonstrations get 10,000 seeds, the expert ranges 100 each, the rest up to 1,000,000;
:func:`check_disjoint` asserts at import that no two overlap.
"""

from __future__ import annotations

DEMO_SEED = 0
EXPERT_MANIFEST = range(10_000, 10_100)
EXPERT_CHECK = range(20_000, 20_100)
BENCHMARK_SEED = 50_000
POLICY_EVAL = 1_000_000
TUNING = 2_000_000
EXPERT_SELECTION = range(3_000_000, 3_000_100)
REPLICATION = 4_000_000
# The learner's rollouts in DAgger's rounds (round r's episode i: DAGGER + (r - 1) * episodes + i).
DAGGER = 5_000_000
# Fresh demonstrations for a replication are collected from here (collect's seeds, far from 0..).
REPLICATION_DEMO_SEED = 500_000

_WIDE = 1_000_000


def ranges() -> dict[str, range]:
    """Name -> the range of reset seeds that use owns."""
    return {
        "demonstrations": range(DEMO_SEED, DEMO_SEED + 10_000),
        "replication demonstrations": range(REPLICATION_DEMO_SEED, REPLICATION_DEMO_SEED + 400_000),
        "expert manifest": EXPERT_MANIFEST,
        "expert test check": EXPERT_CHECK,
        "benchmarks": range(BENCHMARK_SEED, BENCHMARK_SEED + 100_000),
        "policy evaluation": range(POLICY_EVAL, POLICY_EVAL + _WIDE),
        "tuning": range(TUNING, TUNING + _WIDE),
        "expert selection": EXPERT_SELECTION,
        "replication evaluation": range(REPLICATION, REPLICATION + _WIDE),
        "dagger rollouts": range(DAGGER, DAGGER + _WIDE),
    }


def check_disjoint() -> None:
    """Raise if any two ranges share a seed."""
    spans = sorted((r.start, r.stop, name) for name, r in ranges().items())
    for (_, stop, name), (start, _, next_name) in zip(spans, spans[1:]):
        if start < stop:
            raise AssertionError(f"seed ranges overlap: {name} and {next_name}")


check_disjoint()
