"""The user docs' relative links (README.md and docs/*.md): each names a file that exists
and, after `#`, a heading of it, by GitHub's anchor rules; one worded "above" or "below"
points into its own file, where the words hold."""

import re
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _outside_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: its text (a link's words, no backticks) lower-cased,
    letters, digits, `-` and `_` kept, each space a `-`, other characters dropped."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    kept = (c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return "".join("-" if c == " " else c for c in kept)


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in `path`; a repeated one gets `-1`, `-2`, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", _outside_code_blocks(path.read_text()), re.M):
        name = anchor(heading)
        found.add(f"{name}-{seen[name]}" if name in seen else name)
        seen[name] = seen.get(name, 0) + 1
    return found


def relative_links(path: Path) -> list[tuple[str, str]]:
    """(words, target) of each link in `path` that is not a URL."""
    links = re.findall(r"\[([^\]]+)\]\(([^)\s]+)\)", _outside_code_blocks(path.read_text()))
    return [(words, target) for words, target in links if not re.match(r"[a-z]+:", target)]


def test_github_anchors_of_headings_as_the_docs_spell_them():
    assert anchor("Reading a gs:// run offline") == "reading-a-gs-run-offline"
    assert anchor("CPU workers: the package staged with `--setup_file`") == (
        "cpu-workers-the-package-staged-with---setup_file"
    )
    assert anchor("7. How far rows move (an outside review, 2026-12-05)") == (
        "7-how-far-rows-move-an-outside-review-2026-12-05"
    )
    assert anchor("Faithfulness: does the map tell the truth?") == (
        "faithfulness-does-the-map-tell-the-truth"
    )


def test_every_relative_link_of_the_user_docs_names_a_file_and_a_heading_that_exist():
    broken = []
    for doc in DOCS:
        for _, target in relative_links(doc):
            file, _, fragment = target.partition("#")
            dest = (doc.parent / file).resolve() if file else doc
            if not dest.exists() or (fragment and fragment not in anchors(dest)):
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken


def test_a_link_worded_above_or_below_stays_in_its_own_file():
    # Text moved from README.md into docs/ kept links such as [below](faithfulness.md#...):
    # "below" in another file means nothing to a reader of this one.
    crossing = [
        f"{doc.relative_to(ROOT)}: [{words}]({target})"
        for doc in DOCS
        for words, target in relative_links(doc)
        if re.search(r"\b(above|below)\b", words, re.I) and not target.startswith("#")
    ]
    assert not crossing
