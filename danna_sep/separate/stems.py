"""The stem plan: which output stems are written and which sources are summed into each."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .. import SOURCES
from ..errors import ConfigError

StemPlan = dict[str, tuple[int, ...]]  # stem name → indices into SOURCES of the sources summed into it


def stem_sources(name: str) -> tuple[int, ...]:
    """The sources summed into stem ``name``: a source alone; ``accompaniment``: all but vocals;
    ``no_<source>``: all but that source."""
    if name in SOURCES:
        return (SOURCES.index(name),)
    left_out = "vocals" if name == "accompaniment" else name[3:] if name.startswith("no_") else None
    if left_out not in SOURCES:
        raise ConfigError(f"unknown stem {name!r}")
    return tuple(i for i, s in enumerate(SOURCES) if s != left_out)


def plan_for(names: Iterable[str]) -> StemPlan:
    """The plan of the stems ``names`` (e.g. the keys of a destinations mapping), in their order."""
    return {name: stem_sources(name) for name in names}


def stem_plan(stems: Sequence[str] | None = None, two_stems: str | None = None) -> StemPlan:
    """Output stems → the sources summed into each.

    Default: the four sources. ``stems``: a subset of them. ``two_stems="vocals"``: ``vocals`` and
    ``accompaniment`` (the sum of the other three); for another source ``s``: ``s`` and ``no_s``.
    """
    if stems is not None and two_stems is not None:
        raise ConfigError("choose either --stems or --two-stems, not both")
    if two_stems is not None:
        if two_stems not in SOURCES:
            raise ConfigError(f"--two-stems: unknown source {two_stems!r}; choose one of {', '.join(SOURCES)}")
        return plan_for([two_stems, "accompaniment" if two_stems == "vocals" else f"no_{two_stems}"])
    if stems is None:
        return plan_for(SOURCES)
    unknown = [s for s in stems if s not in SOURCES]
    if unknown or not stems:
        raise ConfigError(f"--stems: unknown source(s) {unknown}; choose among {', '.join(SOURCES)}")
    return plan_for(s for s in SOURCES if s in stems)
