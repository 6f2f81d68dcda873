"""Character profiles: each named character's usual look, from its single-character records.

A profile row is (character, field, value, support, records, agreement, confidence,
fill_threshold):
- single-valued fields: the majority value over the character's ``ok`` records that state
  the field; ``support`` records say so, out of ``records``;
- multi-valued fields (those whose ``fill`` policy allows ``profile``, e.g. Hair Style):
  one row per value present in at least half of the records that state the field.

``confidence`` is a posterior, not a hard cut at N records:
- single-valued: each post is taken to state its character's true value with probability
  ``q`` and any other of the field's K values otherwise; ``q`` is estimated per field from
  how often two posts of one character agree. The posterior of the majority value then
  grows with every agreeing post and shrinks with every disagreeing one: one post
  gives about q, two agreeing posts already far more;
- multi-valued: the Beta(1, 1) posterior mean of the share of posts showing the value.

``fill_threshold`` (per field) is chosen on the data by leave-one-out: each record that
states the field is predicted from its character's *other* records, and the threshold
is the lowest confidence at which those predictions are right at least
``TARGET_PRECISION`` of the time, relative to what is reachable (see ``_choose_threshold``). Counts are summed partition by partition, so memory
grows with the number of characters, not records.
"""

from __future__ import annotations

import math

import polars as pl

from charassets.domain.ontology import FieldSpec, Ontology
from charassets.domain.tags.extraction import UNKNOWN

COUNT_SCHEMA = {"character": pl.String, "field": pl.String, "value": pl.String, "n": pl.Int64}
PROFILE_SCHEMA = {
    "character": pl.String,
    "field": pl.String,
    "value": pl.String,
    "support": pl.Int64,
    "records": pl.Int64,
    "agreement": pl.Float64,
    "confidence": pl.Float64,
    "fill_threshold": pl.Float64,
}
OTHER = "__other__"
STATED = "__stated__"  # multi-valued fields: how many records state the field at all
TARGET_PRECISION = 0.9
DEFAULT_Q = 0.9  # per-post reliability when the data cannot tell (no character with two posts)
MIN_PAIRS = 20  # agreeing/disagreeing post pairs needed to estimate q from the data
MAX_CONFIDENCE = 0.999  # posts are evidence, never proof
THRESHOLD_GRID = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)


def profile_fields(ontology: Ontology) -> list[FieldSpec]:
    """Single-valued closed fields whose policy allows profiles."""
    return [f for f in ontology.fields if f.cardinality == "single" and f.values and "profile" in f.fill]


def multi_profile_fields(ontology: Ontology) -> list[FieldSpec]:
    return [f for f in ontology.fields if f.cardinality == "multi" and f.values and "profile" in f.fill]


def direct_rules(ontology: Ontology, field_name: str) -> pl.DataFrame:
    """Tags that are direct evidence (rank >= 1, not the ``weak`` tier) for a field: ``tag, value``."""
    return ontology.rules.filter((pl.col("field") == field_name) & (pl.col("rank") >= 1)).select("tag", "value")


def label_columns(ontology: Ontology) -> list[str]:
    """The columns of the labels that ``value_counts`` reads."""
    fields = [*profile_fields(ontology), *multi_profile_fields(ontology)]
    return ["record_id", "partition", "status", "characters", "flags", *(f.key for f in fields)]


def value_counts(labels: pl.DataFrame, ontology: Ontology) -> pl.DataFrame:
    """(character, field, value, n) over records showing exactly one named character; taken from tag evidence only."""
    # one plan for every field, run at once: each field's records and their evidence are worked out once
    single = (
        labels.lazy()
        .filter((pl.col("status") == "ok") & (pl.col("characters").list.len() == 1))
        .with_columns(pl.col("characters").list.first().alias("character"))
    )
    # a record is its partition and id: the same id in two partitions read together (one post in two files) counts twice
    record = [c for c in ("partition", "record_id") if c in labels.columns]
    parts = []
    for f in profile_fields(ontology):
        v = pl.col(f.key).struct
        several = pl.col("flags").list.contains(f"several:{f.key}")
        stated = single.filter((v.field("source") == "tags") & (v.field("value") != UNKNOWN)).select(
            *record, "character", several.alias("several"), v.field("value").alias("value"), v.field("evidence").alias("evidence")
        )
        # only direct evidence describes the character: a school uniform in one post is an outfit, not an age
        direct = direct_rules(ontology, f.name)
        # a post naming several values (``several:``) counts for each of the values its direct evidence names: "first
        # listed" would be the alphabetically first colour in Danbooru's sorted tag strings, not the most salient one
        named = stated.filter("several").select(*record, "character", pl.col("evidence").alias("tag")).explode("tag")
        parts.append(
            named.join(direct.lazy(), on="tag").select(*record, "character", pl.lit(f.key).alias("field"), "value").unique().drop(record)
        )
        # any other post counts for its value when any of its evidence is direct
        direct_evidence = pl.col("evidence").list.eval(pl.element().is_in(direct.get_column("tag").implode())).list.any()
        parts.append(stated.filter(~pl.col("several") & direct_evidence).select("character", pl.lit(f.key).alias("field"), "value"))
    for f in multi_profile_fields(ontology):
        stated = single.filter((pl.col(f.key).struct.field("source") == "tags") & (pl.col(f.key).struct.field("value").list.len() > 0))
        values = stated.select("character", pl.col(f.key).struct.field("value").alias("value")).explode("value")
        parts.append(values.select("character", pl.lit(f.key).alias("field"), "value"))
        parts.append(stated.select("character", pl.lit(f.key).alias("field"), pl.lit(STATED).alias("value")))
    if not parts:
        return pl.DataFrame(schema=COUNT_SCHEMA)
    return pl.concat(parts).group_by("character", "field", "value").agg(pl.len().cast(pl.Int64).alias("n")).cast(COUNT_SCHEMA).collect()


def merge_counts(a: pl.DataFrame | None, b: pl.DataFrame) -> pl.DataFrame:
    both = b if a is None else pl.concat([a, b])
    return both.group_by("character", "field", "value").agg(pl.col("n").sum())


def with_prior(counts: pl.DataFrame | None, prior: pl.DataFrame) -> pl.DataFrame:
    """This data's counts, plus a prior's for the (character, field) pairs this data does not state at all.

    The data being extracted speaks for its own characters: a large lake built from other
    data (the demo's synthetic looks, say) must not outvote a file's own posts.
    """
    if counts is None or counts.height == 0:
        return prior
    missing = prior.join(counts.select("character", "field").unique(), on=["character", "field"], how="anti")
    return merge_counts(counts, missing)


def profiles_as_counts(profiles: pl.DataFrame, ontology: Ontology) -> pl.DataFrame:
    """Existing profiles back to counts, to merge with new data.

    Single-valued fields: the majority value, and the rest as one 'other' bucket.
    Multi-valued fields: each kept value, and how many records stated the field.
    """
    multi = [f.key for f in multi_profile_fields(ontology)]
    single = profiles.filter(~pl.col("field").is_in(multi))
    lists = profiles.filter(pl.col("field").is_in(multi))
    return pl.concat(
        [
            profiles.select("character", "field", "value", pl.col("support").alias("n")),
            single.filter(pl.col("records") > pl.col("support")).select(
                "character", "field", pl.lit(OTHER).alias("value"), (pl.col("records") - pl.col("support")).alias("n")
            ),
            lists.group_by("character", "field")
            .agg(pl.col("records").max().alias("n"))
            .select("character", "field", pl.lit(STATED).alias("value"), "n"),
        ]
    ).cast(COUNT_SCHEMA)


# ---------------------------------------------------------------------------- the posterior


def estimate_q(counts: pl.DataFrame, k: int) -> float:
    """Per-post reliability from how often two posts of one character agree: p = q^2 + (1-q)^2/(K-1), solved for q."""
    per = counts.group_by("character").agg((pl.col("n") * (pl.col("n") - 1)).sum().alias("agree"), pl.col("n").sum().alias("total"))
    pairs = per.select((pl.col("total") * (pl.col("total") - 1)).sum()).item() or 0
    if pairs < MIN_PAIRS:
        return DEFAULT_Q
    p = per.get_column("agree").sum() / pairs
    k = max(k, 2)
    # q^2 + (1-q)^2/(k-1) = p  ->  k q^2 - 2q + 1 - (k-1) p = 0
    disc = max(4 - 4 * k * (1 - (k - 1) * p), 0.0)
    q = (2 + math.sqrt(disc)) / (2 * k)
    return min(max(q, 1.0 / k + 1e-3), 0.995)


def posterior(counts: list[int], k: int, q: float) -> list[float]:
    """P(each listed value is the true one | counts), with the field's unseen values sharing the rest."""
    k = max(k, len(counts), 2)
    step = math.log(q * (k - 1) / (1 - q))
    top = max(counts)
    weights = [math.exp((n - top) * step) for n in counts]
    z = sum(weights) + (k - len(counts)) * math.exp(-top * step)
    return [w / z for w in weights]


def _choose_threshold(scored: list[tuple[float, bool, int]], ceiling: float = 1.0) -> float:
    """Lowest grid confidence at which leave-one-out predictions reach TARGET_PRECISION of what is reachable.

    A left-out record is compared with its own stated value, and posts of one character
    legitimately differ (heterochromia, two-tone hair, a costume): even a perfect
    predictor of a character's usual value agrees with only ``ceiling`` of them (the
    share of records stating their character's majority value). So the target is
    ``TARGET_PRECISION * ceiling``, weighted by records.
    """
    target = TARGET_PRECISION * ceiling
    for t in THRESHOLD_GRID:
        kept = [(ok, w) for c, ok, w in scored if c >= t]
        total = sum(w for _, w in kept)
        if total and sum(w for ok, w in kept if ok) / total >= target:
            return t
    return 1.01  # never reaches the target: profiles do not fill this field


def _single_profiles(counts: pl.DataFrame, spec: FieldSpec) -> pl.DataFrame:
    k = len(spec.values or ())
    q = estimate_q(counts.filter(pl.col("value") != OTHER), k)
    groups = (
        counts.sort("character", "n", "value", descending=[False, True, False]).group_by("character", maintain_order=True).agg("value", "n")
    )
    rows, scored = [], []
    agreeing = stated = 0
    for character, values, ns in groups.iter_rows():
        if sum(ns) >= 2:
            agreeing, stated = agreeing + ns[0], stated + sum(ns)
        post = posterior(ns, k, q)
        total = sum(ns)
        if values[0] != OTHER:
            rows.append((character, spec.key, values[0], ns[0], total, round(ns[0] / total, 4), round(min(post[0], MAX_CONFIDENCE), 4)))
        for i, (v, n) in enumerate(zip(values, ns, strict=True)):  # leave one record of value v out
            if v == OTHER:
                continue
            loo = list(ns)
            loo[i] -= 1
            if sum(loo) == 0:
                continue
            best = max(range(len(loo)), key=lambda j: (loo[j], -j))  # ties: the listed (alphabetical) order
            if values[best] == OTHER:
                continue
            scored.append((posterior(loo, k, q)[best], values[best] == v, n))
    threshold = _choose_threshold(scored, agreeing / stated if stated else 1.0)
    return pl.DataFrame(rows, schema=list(PROFILE_SCHEMA)[:-1], orient="row").with_columns(pl.lit(threshold).alias("fill_threshold"))


def _multi_profiles(counts: pl.DataFrame, spec: FieldSpec) -> pl.DataFrame:
    stated = counts.filter(pl.col("value") == STATED).select("character", pl.col("n").alias("records"))
    values = counts.filter(pl.col("value") != STATED).join(stated, on="character", how="inner")
    # leave-one-out: a record showing v, predicted from the others (v kept if still in half of them);
    # a record stating the field without v, predicted to show v if v is in half of the others
    loo = values.with_columns(
        ((pl.col("n") - 1) * 2 >= (pl.col("records") - 1)).alias("hit_kept"),
        (pl.col("n") * 2 >= (pl.col("records") - 1)).alias("miss_kept"),
        (pl.col("n") / (pl.col("records") + 1)).alias("hit_conf"),  # Beta(1,1) mean with one record fewer
        ((pl.col("n") + 1) / (pl.col("records") + 1)).alias("miss_conf"),
    ).filter(pl.col("records") > 1)
    scored = [(c, True, n) for c, n in loo.filter("hit_kept").select("hit_conf", "n").iter_rows()]
    scored += [(c, False, m) for c, m in loo.filter("miss_kept").select("miss_conf", pl.col("records") - pl.col("n")).iter_rows() if m > 0]
    # reachable: a value a character shows in most posts is still missing from some (tags get dropped)
    usual = values.filter((pl.col("n") * 2 >= pl.col("records")) & (pl.col("records") > 1))
    ceiling = usual.get_column("n").sum() / usual.get_column("records").sum() if usual.height else 1.0
    threshold = _choose_threshold(scored, ceiling)
    return (
        values.filter(pl.col("n") * 2 >= pl.col("records"))
        .select(
            "character",
            pl.lit(spec.key).alias("field"),
            "value",
            pl.col("n").alias("support"),
            "records",
            (pl.col("n") / pl.col("records")).round(4).alias("agreement"),
            ((pl.col("n") + 1) / (pl.col("records") + 2)).clip(upper_bound=MAX_CONFIDENCE).round(4).alias("confidence"),
        )
        .with_columns(pl.lit(threshold).alias("fill_threshold"))
    )


def build_profiles(counts: pl.DataFrame, ontology: Ontology) -> pl.DataFrame:
    """Profile rows for every (character, field) with counts, with their confidence and the field's fill threshold."""
    parts = [pl.DataFrame(schema=PROFILE_SCHEMA)]
    for spec in profile_fields(ontology):
        part = counts.filter(pl.col("field") == spec.key)
        if part.height:
            parts.append(_single_profiles(part, spec).cast(PROFILE_SCHEMA))
    for spec in multi_profile_fields(ontology):
        part = counts.filter(pl.col("field") == spec.key)
        if part.height:
            parts.append(_multi_profiles(part, spec).cast(PROFILE_SCHEMA))
    return pl.concat(parts).sort("character", "field", "value")


def usable(profiles: pl.DataFrame) -> pl.DataFrame:
    """Profile rows confident enough to fill a gap, resolve a conflict or flag a contradiction."""
    return profiles.filter((pl.col("confidence") >= pl.col("fill_threshold")) & (pl.col("value") != OTHER))
