"""The demo's vocabulary of looks: named characters (the embedded catalogue), scene, outfit, expression,
accessory, colour and meta tags, alias spellings and invented artist names. Data, not logic."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl
import yaml

CHARACTERS_FILE = Path(__file__).resolve().parents[2] / "data" / "demo_characters.yaml"
SHARD_ROWS = 200_000

SCENE = [
    "solo",
    "looking_at_viewer",
    "smile",
    "open_mouth",
    "simple_background",
    "white_background",
    "blush",
    "upper_body",
    "standing",
    "sitting",
    "holding",
    "outdoors",
    "indoors",
    "sky",
    "day",
    "night",
    "cloud",
    "tree",
    "flower",
    "from_side",
    "full_body",
    "cowboy_shot",
    "closed_mouth",
    "hand_up",
    "portrait",
    "light_smile",
    "food",
    "book",
    "cup",
    "petals",
    "water",
    "window",
]
EXPRESSIONS = [
    "smile",
    "grin",
    ":d",
    "blush",
    "angry",
    "sad",
    "crying",
    "surprised",
    "expressionless",
    "embarrassed",
    "smug",
    "serious",
    "pout",
    "one_eye_closed",
]
OUTFITS = [
    "school_uniform",
    "serafuku",
    "white_shirt",
    "black_skirt",
    "pleated_skirt",
    "dress",
    "white_dress",
    "black_dress",
    "jacket",
    "hoodie",
    "kimono",
    "yukata",
    "maid",
    "swimsuit",
    "bikini",
    "armor",
    "military_uniform",
    "suit",
    "pants",
    "jeans",
    "shorts",
    "sweater",
    "thighhighs",
    "pantyhose",
    "gym_uniform",
    "cape",
    "coat",
]
ACCESSORIES = [
    "hat",
    "glasses",
    "hair_ornament",
    "hair_ribbon",
    "hair_bow",
    "hairband",
    "earrings",
    "necklace",
    "choker",
    "scarf",
    "gloves",
    "bowtie",
    "necktie",
    "halo",
]
HAIR_COLORS = ["black", "brown", "blonde", "red", "orange", "pink", "purple", "blue", "aqua", "green", "white", "grey"]
EYE_COLORS = ["blue", "red", "green", "purple", "brown", "yellow", "pink", "black", "grey", "orange", "aqua"]
LENGTHS = ["short_hair", "medium_hair", "long_hair", "very_long_hair"]
STYLES = [
    "ponytail",
    "side_ponytail",
    "twintails",
    "braid",
    "twin_braids",
    "hair_bun",
    "double_bun",
    "bob_cut",
    "hime_cut",
    "ahoge",
    "blunt_bangs",
    "wavy_hair",
    "drill_hair",
]
BODY = ["muscular", "toned", "petite", "curvy", "plump", "skinny", "abs", "wide_hips"]
RARE = [
    "scar",
    "scar_on_face",
    "tattoo",
    "arm_tattoo",
    "dark_skin",
    "tan",
    "pale_skin",
    "mature_female",
    "old_man",
    "child",
    "teenage",
    "androgynous",
]
SCENERY = [
    "no_humans",
    "scenery",
    "landscape",
    "building",
    "city",
    "sky",
    "cloud",
    "tree",
    "water",
    "mountain",
    "sunset",
    "night",
    "star_(sky)",
    "flower",
]
META = [
    "highres",
    "absurdres",
    "commentary_request",
    "translated",
    "commentary",
    "english_commentary",
    "bad_id",
    "bad_pixiv_id",
    "official_art",
]
QUALITY = ["masterpiece", "best quality", "high quality", "amazing quality", "very aesthetic", "newest", "recent", "year 2023"]
RATINGS = {"g": "general", "s": "sensitive", "q": "questionable", "e": "explicit"}
# spellings that are not canonical, as users really type them
ALIASES = {
    "grey_hair": "gray_hair",
    "blonde_hair": "blond_hair",
    "twintails": "twin_tails",
    "serafuku": "sailor_uniform",
    "one_eye_closed": "wink",
    "pokemon": "pokémon",
    "very_long_hair": "verylong_hair",
}
EXTRA_SERIES = ["pokemon", "original"]
# real-looking tags deliberately left out of the embedded vocabulary: they must come out flagged as unknown
UNLISTED = ["holding_umbrella", "sparkle_background", "motion_lines", "see-through_sleeves", "hand_on_own_chin"]
SYLLABLES = [
    "ka",
    "ki",
    "ku",
    "ko",
    "sa",
    "shi",
    "su",
    "ta",
    "to",
    "na",
    "ni",
    "no",
    "ha",
    "hi",
    "mi",
    "mo",
    "ra",
    "ri",
    "ru",
    "yu",
    "ya",
    "re",
    "ao",
    "me",
]


@dataclass(frozen=True)
class Character:
    tag: str
    series: str
    subject: str
    look: tuple[str, ...]


def load_characters(path: str | Path | None = None) -> list[Character]:
    """The embedded catalogue, or a ``character_tag, core_tags`` CSV (first core tag = subject)."""
    if path is None:
        data = yaml.safe_load(CHARACTERS_FILE.read_text())
        return [Character(k, v["series"], v["subject"], tuple(v["look"])) for k, v in data.items()]
    df = pl.read_csv(path)
    out = []
    for tag, core in df.iter_rows():
        tags = [t.strip().replace(" ", "_") for t in str(core).split(",") if t.strip()]
        if tags and tags[0] in ("1girl", "1boy", "1other"):
            series = tag.rsplit("_(", 1)[1].rstrip(")") if tag.endswith(")") and "_(" in tag else ""
            out.append(Character(tag, series, tags[0], tuple(dict.fromkeys(tags[1:]))))
    return out


@lru_cache(maxsize=4)
def artist_names(n: int = 300, seed: int = 7) -> list[str]:
    """Invented artist names; none is a real Danbooru tag (``niya`` is a character there, and would count as one)."""
    from charassets.domain.tags.vocabulary import EMBEDDED_DANBOORU

    real = set(pl.read_parquet(EMBEDDED_DANBOORU, columns=["tag"]).get_column("tag").to_list()) if EMBEDDED_DANBOORU.exists() else set()
    rng = np.random.default_rng(seed)
    names: set[str] = set()
    while len(names) < n:
        parts = rng.choice(SYLLABLES, size=rng.integers(2, 5))
        name = "".join(parts) + ("_" + "".join(rng.choice(SYLLABLES, size=2)) if rng.random() < 0.5 else "")
        if name not in real:
            names.add(name)
    return sorted(names)
