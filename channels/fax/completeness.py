"""When is a file in the inbox whole? Pure decisions over directory listings.

A fax server writes a file over some time; claiming it half-written would read a
truncated document. Three conventions, one per channel (`completeness` in config):

- `stable_seconds`: size and mtime unchanged for that long (works with any server);
- `rename`: the server writes `NAME.part` / `NAME.tmp` and renames it when done, so
  every other name is complete at once;
- `sidecar`: the server writes `NAME.done` after `NAME`; only then is NAME complete.

Hidden files (`.NAME`) and sidecars themselves are never documents.
`InboxTracker.ready(listing, now)` takes {name: (size, mtime_ns)} and returns the
names to claim now; it remembers what it saw between calls (memory bound: one
entry per file present in the inbox).
"""
from __future__ import annotations

from dataclasses import dataclass, field

PARTIAL_SUFFIXES = (".part", ".tmp", ".partial", ".crdownload")
SIDECAR_SUFFIX = ".done"


def is_candidate(name: str, rule: str) -> bool:
    low = name.lower()
    if name.startswith(".") or low.endswith(SIDECAR_SUFFIX) or low.endswith(".error.txt"):
        return False
    if rule == "rename" and low.endswith(PARTIAL_SUFFIXES):
        return False
    return True


@dataclass
class InboxTracker:
    rule: str                      # stable_seconds | rename | sidecar
    stable_seconds: float = 2.0
    _seen: dict[str, tuple[int, int, float]] = field(default_factory=dict)   # name -> size, mtime, since

    @property
    def waiting(self) -> int:
        """Files seen but not yet stable (the channel rescans sooner while there are any)."""
        return len(self._seen)

    def ready(self, listing: dict[str, tuple[int, int]], now: float) -> list[str]:
        out = []
        names = set(listing)
        for name in list(self._seen):
            if name not in names:
                del self._seen[name]
        for name in sorted(listing):
            if not is_candidate(name, self.rule):
                continue
            if self.rule == "rename":
                out.append(name)
            elif self.rule == "sidecar":
                if name + SIDECAR_SUFFIX in names:
                    out.append(name)
            else:
                size, mtime = listing[name]
                seen = self._seen.get(name)
                if seen is None or seen[:2] != (size, mtime):
                    self._seen[name] = (size, mtime, now)
                    if self.stable_seconds > 0:
                        continue
                    seen = self._seen[name]
                if now - seen[2] >= self.stable_seconds:
                    out.append(name)
        for name in out:
            self._seen.pop(name, None)
        return out
