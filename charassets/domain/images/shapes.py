"""What every image backend returns: ``ImageSignals`` (faces, status, flags, attributes by field key) and its ``Face``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Face:
    """One face: its box in the picture's pixels, the detector's likelihood, and the colours read for it (main face only)."""

    box: tuple[int, int, int, int]  # x, y, width, height
    likelihood: float
    hair: tuple[int, int, int]
    eyes: tuple[int, int, int]  # mean of both eyes
    skin: tuple[int, int, int]
    # CIELAB distance between the left and right eye readings, where a backend measures it (the
    # offline one does not: 0.0). Not a heterochromia flag: such readings were noisy (over 35 on
    # 22 of the 46 single-face dev images, none of which shows different eyes).
    eyes_delta_e: float = 0.0


@dataclass
class ImageSignals:
    """What a picture says: its faces, a status (``ok``, ``ambiguous``), flags, and attributes by field key."""

    backend: str
    faces: list[Face]
    status: str  # ok | ambiguous
    flags: list[str] = field(default_factory=list)
    attributes: dict[str, dict] = field(default_factory=dict)  # field key -> {value, confidence, evidence, source}

    @property
    def subject(self) -> str:
        return {0: "none", 1: "single"}.get(len(self.faces), "multiple")
