"""A development set of real-style Danbooru posts with a gold file, for ``charassets evaluate``.

Built from a ``character_tag, core_tags`` CSV (a named character's canonical look). Posts
look the way real ones do:
- several posts per character, in one shuffled file;
- each look tag dropped at random (so a post often lacks a field its character has);
- noise: scene and composition tags, artist names, meta and quality tags;
- prompt weights and escaped parentheses, odd case, spaces for underscores;
- real alias spellings from the Danbooru vocabulary (``1girls``, ``sole_female``, ``female_solo``);
- typos: hyphens for separators (``green-eyes``) and run-together forms (``blondehair``);
- contradicting tags (``short hair`` beside ``long hair``) on a share of posts;
- multi-character posts and posts with no character.

The gold is the character's look (from its core tags through the ontology), not the
post's: a post that lost its hair-colour tag still has the character's hair colour as
gold, and lists the field under ``dropped``. Same seed and arguments, same bytes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from charassets.domain.demo import META, QUALITY, SCENE, SCENERY, Character, artist_names, load_characters
from charassets.domain.ontology import Ontology
from charassets.domain.tags.vocabulary import Vocabulary

SCORED_FIELDS = ("gender", "hair_color", "eye_color", "hair_length", "hair_style")
CONTRADICTABLE = ("hair_length", "hair_color", "eye_color")
SUBJECT_GENDER = {"1girl": "female", "1boy": "male"}


@dataclass(frozen=True)
class DevsetConfig:
    characters: int = 300
    posts_per_character: int = 5
    drop_rate: float = 0.3  # each look tag is missing from a post with this probability
    subject_drop_rate: float = 0.15  # no 1girl/1boy: the character tag says "one"
    alias_rate: float = 0.08  # a tag written with one of its real aliases
    typo_rate: float = 0.04  # hyphenated or run-together
    weight_rate: float = 0.06  # (tag:1.2)
    contradiction_rate: float = 0.06  # a post carries a second value for one single-valued field
    multi_share: float = 0.10  # posts showing two characters
    none_share: float = 0.05  # posts with no character


class _Looks:
    """Each character's look tags by field, and its gold values, from the ontology."""

    def __init__(self, ontology: Ontology):
        self.ontology = ontology
        self.key = {f.name: f.key for f in ontology.fields}

    def field_tags(self, tags: list[str]) -> dict[str, dict[str, str]]:
        """``field key -> {tag: value}`` for the tags the ontology maps (rank >= 1: direct evidence)."""
        rules = self.ontology.rules_for(pl.Series(tags, dtype=pl.String)).filter(pl.col("rank") >= 1)
        out: dict[str, dict[str, str]] = {}
        for tag, fname, value in rules.select("tag", "field", "value").iter_rows():
            out.setdefault(self.key[fname], {})[tag] = value
        return out

    def values_by_field(self) -> dict[str, list[tuple[str, str]]]:
        """For contradictions: ``field key -> [(tag, value)]`` of plain direct tags."""
        rules = self.ontology.rules.filter(pl.col("rank") == 1)
        out: dict[str, list[tuple[str, str]]] = {}
        for tag, fname, value in rules.select("tag", "field", "value").iter_rows():
            if self.key[fname] in CONTRADICTABLE and tag.endswith(("_hair", "_eyes")) and "_" in tag:
                out.setdefault(self.key[fname], []).append((tag, value))
        return out


def _aliases_by_tag(vocabulary: Vocabulary) -> dict[str, list[str]]:
    """Real alias spellings per canonical tag (word-like ones only)."""
    a = vocabulary.aliases.filter(pl.col("alias").str.contains(r"^[a-z0-9][a-z0-9_\-']*$"))
    out: dict[str, list[str]] = {}
    for alias, tag in a.select("alias", "tag").iter_rows():
        out.setdefault(tag, []).append(alias)
    return {t: sorted(v) for t, v in out.items()}


class _PostWriter:
    def __init__(self, rng: random.Random, config: DevsetConfig, aliases: dict[str, list[str]]):
        self.rng, self.config, self.aliases = rng, config, aliases

    def spell(self, tag: str) -> str:
        """One tag as a person might have typed it."""
        r, c = self.rng, self.config
        if tag in self.aliases and r.random() < c.alias_rate:
            tag = r.choice(self.aliases[tag])
        elif "_" in tag and r.random() < c.typo_rate:
            tag = tag.replace("_", "-") if r.random() < 0.5 else tag.replace("_", "")
        style = r.random()
        if style < 0.7:  # prompt style: spaces, escaped parentheses
            tag = tag.replace("_", " ").replace("(", "\\(").replace(")", "\\)")
        if r.random() < 0.03:
            tag = tag.title()
        if r.random() < c.weight_rate and not tag.endswith("\\)"):
            tag = f"({tag}:{r.choice([0.8, 1.1, 1.2, 1.3])})"
        return tag

    def noise(self, people: bool = True) -> list[str]:
        r = self.rng
        tags = r.sample([t for t in SCENE if t != "solo"], r.randrange(2, 7)) if people else r.sample(SCENERY[1:], r.randrange(0, 3))
        tags += [r.choice(artist_names())] if r.random() < 0.7 else []
        tags += r.sample(META, r.randrange(0, 2))
        return tags

    def quality(self) -> list[str]:
        return self.rng.sample(QUALITY, self.rng.randrange(0, 3))


def _gold_values(look: _Looks, character: Character) -> dict[str, list[str]]:
    by_field = look.field_tags(list(character.look))
    gold = {k: sorted(set(v.values())) for k, v in by_field.items() if k in SCORED_FIELDS}
    if character.subject in SUBJECT_GENDER:
        gold["gender"] = [SUBJECT_GENDER[character.subject]]
    return gold


def generate_devset(
    out_dir: str | Path,
    characters_csv: str | Path,
    seed: int = 0,
    config: DevsetConfig = DevsetConfig(),
    ontology: Ontology | None = None,
    vocabulary: Vocabulary | None = None,
) -> tuple[Path, Path]:
    """Write ``posts.jsonl`` (``id``, ``tags``) and ``gold.jsonl`` under ``out_dir``; return both paths."""
    ontology = ontology or Ontology.load()
    vocabulary = vocabulary or Vocabulary.embedded()
    rng = random.Random(seed)
    look = _Looks(ontology)
    everyone = [c for c in load_characters(characters_csv) if c.subject in SUBJECT_GENDER]
    chosen = rng.sample(everyone, min(config.characters, len(everyone)))
    writer = _PostWriter(rng, config, _aliases_by_tag(vocabulary))
    contradict = look.values_by_field()
    posts: list[tuple[list[str], dict]] = []

    for character in chosen:
        gold = _gold_values(look, character)
        field_tags = look.field_tags(list(character.look))
        for _ in range(config.posts_per_character):
            kept = [t for t in character.look if rng.random() >= config.drop_rate]
            subject = [] if rng.random() < config.subject_drop_rate else [character.subject]
            present = look.field_tags(kept)
            dropped = sorted(k for k in gold if k != "gender" and k in field_tags and k not in present)
            if not subject and "gender" in gold and "gender" not in present:
                dropped = sorted([*dropped, "gender"])
            solo = ["solo"] if rng.random() < 0.6 else []
            extra: list[str] = []
            if rng.random() < config.contradiction_rate:
                options = [k for k in CONTRADICTABLE if k in present and k in gold]
                if options:
                    k = rng.choice(options)
                    wrong = [(t, v) for t, v in contradict.get(k, []) if v not in gold[k]]
                    if wrong:
                        extra.append(rng.choice(wrong)[0])
            if not subject and solo == []:
                solo = ["solo"] if rng.random() < 0.3 else []
            general = kept + extra + writer.noise()
            rng.shuffle(general)
            tags = subject + solo + [character.tag] + ([character.series] if character.series else []) + general
            gold_row = {"status": "ok", "characters": [character.tag], **gold, "dropped": dropped}
            posts.append((tags, gold_row))

    n_single = len(posts)
    n_multi = int(n_single * config.multi_share)
    for _ in range(n_multi):
        a, b = rng.sample(chosen, 2)
        counts = {("1girl", "1girl"): ["2girls"], ("1boy", "1boy"): ["2boys"]}.get((a.subject, b.subject), ["1girl", "1boy"])
        look_tags = [t for c in (a, b) for t in c.look if rng.random() >= config.drop_rate]
        multi = ["multiple_girls"] if counts == ["2girls"] else ["multiple_boys"] if counts == ["2boys"] else []
        tags = counts + multi + [a.tag, b.tag] + sorted({s for s in (a.series, b.series) if s}) + look_tags + writer.noise()
        if rng.random() < 0.2:  # the count tag lost: two character tags still say "two"
            tags = [t for t in tags if t not in counts]
        posts.append((tags, {"status": "ambiguous", "characters": sorted([a.tag, b.tag])}))
    for _ in range(int(n_single * config.none_share)):
        tags = ["no_humans", *rng.sample(SCENERY[1:], rng.randrange(2, 6))] + writer.noise(people=False)
        posts.append((tags, {"status": "no_character", "characters": []}))

    rng.shuffle(posts)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    posts_path, gold_path = out / "posts.jsonl", out / "gold.jsonl"
    with open(posts_path, "w", encoding="utf-8") as p, open(gold_path, "w", encoding="utf-8") as g:
        for i, (tags, gold_row) in enumerate(posts):
            pid = str(100_000 + i)
            written = [writer.spell(t) for t in tags] + writer.quality()
            p.write(json.dumps({"id": pid, "tags": ", ".join(written)}, ensure_ascii=False) + "\n")
            g.write(json.dumps({"id": pid, **gold_row}, ensure_ascii=False) + "\n")
    return posts_path, gold_path
