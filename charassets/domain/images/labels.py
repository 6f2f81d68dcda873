"""Hand labels of pictures, and scoring image records against them (the acceptance figures).

Label file (CSV): ``file``, one column per labelled field, named by its ontology key
(``hair_color``, ``eye_color``: acceptable names separated by ``|``, the first the best;
empty: not visible), ``characters``,
``several_views``, ``face_occluded``, ``notes``. A prediction is right when it is one of
the acceptable names. Records are matched by ``id`` (the file name, as ``extract --image``
and the graph give it, path prefixes ignored).

``score`` gives, per field, coverage (a value given) on single-character pictures and
accuracy where a value is given; the multi-character pictures flagged; the
single-character pictures wrongly flagged; and the reliability table of the confidences.
``calibration_samples`` turns the dev pictures into the calibration's training rows.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from charassets.domain.images.calibration import reliability

LABELS_FILE = Path(__file__).resolve().parents[3] / "charassets_tests" / "data" / "images_dev_labels.csv"
UNKNOWN = "unknown"


def _ontology(ontology=None):
    from charassets.domain.ontology import Ontology

    return ontology or Ontology.load()


def labelled_fields(labels: dict[str, dict], ontology=None) -> dict[str, str]:
    """Field key -> display name, for the label columns that are ontology fields."""
    columns = set().union(*(row.keys() for row in labels.values())) if labels else set()
    return {f.key: f.name for f in _ontology(ontology).fields if f.key in columns}


def read_labels(path: str | Path = LABELS_FILE, ontology=None) -> dict[str, dict]:
    """file name -> label row: each ontology field's column as a list of acceptable names, ``characters`` as an int."""
    keys = {f.key for f in _ontology(ontology).fields}
    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for key in keys & set(row):
                row[key] = [v.strip() for v in (row.get(key) or "").split("|") if v.strip()]
            row["characters"] = int(row.get("characters") or 1)
            out[row["file"]] = row
    return out


def several(record: dict) -> bool:
    """Whether a record says its picture shows several characters."""
    return "image_shows_several" in (record.get("flags") or []) or any(f.startswith("faces:") for f in record.get("flags") or [])


def score(records: list[dict], labels: dict[str, dict], ontology=None) -> dict:
    """The acceptance figures of image records (the table's JSON shape) against the labels."""
    names = labelled_fields(labels, ontology)
    by_file = {str(r.get("id") or "").rsplit("/", 1)[-1]: r for r in records}
    singles = [f for f, lab in labels.items() if lab["characters"] == 1]
    multi = [f for f, lab in labels.items() if lab["characters"] > 1]
    out: dict = {"images": len(labels), "matched": sum(f in by_file for f in labels), "fields": {}}
    for key, display in names.items():
        n = covered = right = 0
        points = []
        for f in singles:
            gold = labels[f][key]
            attr = ((by_file.get(f) or {}).get("attributes") or {}).get(display) or {}
            value = attr.get("value")
            given = value not in (None, UNKNOWN, [])
            if gold:
                n += 1
                covered += given
            if given:
                ok = bool(gold) and value in gold  # a colour named for eyes that are not visible is wrong
                right += ok
                points.append((float(attr.get("confidence") or 0.0), ok))
        shown = len(points)
        out["fields"][key] = {
            "labelled_singles": n,
            "coverage": round(covered / n, 4) if n else None,
            "given": shown,
            "right": right,
            "accuracy": round(right / shown, 4) if shown else None,
            "reliability": reliability([p for p, _ in points], [r for _, r in points]),
        }
    out["several"] = {
        "multi": len(multi),
        "multi_flagged": sum(several(by_file.get(f) or {}) for f in multi),
        "singles": len(singles),
        "singles_flagged": sum(several(by_file.get(f) or {}) for f in singles),
    }
    return out


def format_score(s: dict) -> str:
    """The figures as text."""
    lines = [f"images {s['images']}, matched {s['matched']}"]
    for key, e in s["fields"].items():
        lines.append(
            f"{key:<11} coverage {e['coverage']} of {e['labelled_singles']} labelled single-character images; "
            f"right {e['right']}/{e['given']} = {e['accuracy']}"
        )
        for b in e["reliability"]:
            lines.append(f"  {b['bin']:<12} n={b['n']:<4} mean confidence {b['mean_confidence']:.3f}  share right {b['accuracy']:.3f}")
    m = s["several"]
    lines.append(
        f"several characters: {m['multi_flagged']}/{m['multi']} multi-character images flagged; "
        f"{m['singles_flagged']}/{m['singles']} single-character images wrongly flagged"
    )
    return "\n".join(lines)


def calibration_samples(folder: str | Path, labels: dict[str, dict], constancy: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per field: (features, right) of every reading the offline backend makes on the labelled single-character pictures.

    ``constancy``: colour-balance the picture first (shades of grey), to measure whether it helps.
    """
    from charassets.domain.images.analysis import read_fields
    from charassets.domain.images.colours import default_palette
    from charassets.domain.images.decode import decode_image
    from charassets.domain.images.faces import scan_faces

    palette = default_palette()
    rows = {k: ([], []) for k in labelled_fields(labels) if k in palette.regions}
    for f, lab in sorted(labels.items()):
        if lab["characters"] != 1:
            continue
        image = decode_image((Path(folder) / f).read_bytes()).image
        faces, named, _ = read_fields(image, scan_faces(image), palette, constancy)
        if len(faces) > 1:
            continue
        for n in named:
            if n.key in rows:
                rows[n.key][0].append(n.features)
                rows[n.key][1].append(n.value in lab[n.key])
    return {k: (np.array(x, dtype=np.float64), np.array(y, dtype=bool)) for k, (x, y) in rows.items()}


def cross_validated_report(folder: str | Path, labels: dict[str, dict], seeds: int = 5) -> str:
    """Out-of-fold figures of the calibration on the labels: reliability table and, at the threshold, coverage and precision."""
    from charassets.domain.images import calibration

    lines = []
    for key, (x, y) in calibration_samples(folder, labels, constancy=True).items():
        p = np.mean([calibration.cross_validated(x, y, seed=s) for s in range(seeds)], axis=0)
        t = calibration.threshold_from(x, y)
        lines.append(
            f"{key} with shades-of-grey colour constancy (not used): {int(y.sum())} of {len(y)} readings right; "
            f"out of fold at its own threshold {t}: {int((p >= t).sum())} shown, {y[p >= t].mean():.3f} right"
        )
    for key, (x, y) in calibration_samples(folder, labels).items():
        p = np.mean([calibration.cross_validated(x, y, seed=s) for s in range(seeds)], axis=0)
        shown = p >= calibration.IMAGE_MIN_CONFIDENCE
        singles = sum(1 for lab in labels.values() if lab["characters"] == 1 and lab[key])
        lines.append(
            f"{key}: {len(y)} readings, {int(y.sum())} right; out of fold at {calibration.IMAGE_MIN_CONFIDENCE}: "
            f"{int(shown.sum())} shown ({shown.sum() / singles:.3f} of {singles} labelled singles), "
            f"{int(y[shown].sum())} right ({y[shown].mean():.3f}); threshold from the fit: {calibration.threshold_from(x, y)}"
        )
        for b in calibration.reliability(p, y):
            lines.append(f"  {b['bin']:<12} n={b['n']:<4} mean confidence {b['mean_confidence']:.3f}  share right {b['accuracy']:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m charassets.domain.images.labels [FOLDER [LABELS]]
    import sys

    from charassets.domain.tags.vocabulary import shared_data_dir

    folder = sys.argv[1] if len(sys.argv) > 1 else shared_data_dir() / "images_dev"
    print(cross_validated_report(folder, read_labels(sys.argv[2] if len(sys.argv) > 2 else LABELS_FILE)))
