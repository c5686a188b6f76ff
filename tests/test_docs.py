"""The reference pages in docs/ are generated from the code and kept current."""

from __future__ import annotations

from pathlib import Path

from pipeline.reference import PAGES, pages

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_generated_references_match_the_code() -> None:
    for name, text in pages().items():
        committed = (DOCS / name).read_text(encoding="utf-8") if (DOCS / name).exists() else ""
        assert committed == text, f"docs/{name} is stale: run `python -m pipeline.reference`"


def test_every_config_key_and_message_field_is_in_the_references() -> None:
    from pipeline.config import FileSourceConfig, ModelConfig, PipelineConfig

    text = pages()
    assert set(text) == set(PAGES)
    for model in (PipelineConfig, ModelConfig, FileSourceConfig):
        assert f"## {model.__name__}" in text["configuration.md"]
        for key in model.model_fields:
            assert f"| `{key}` |" in text["configuration.md"], key
    assert "Local weights, a bundled name" in text["configuration.md"], "field docstrings are the meanings"
    for field in ("stream_id", "seq", "detections[].box", "detections[].track_id"):
        assert f"| `{field}` |" in text["messages.md"], field


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of ``page``."""
    import re

    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_link_between_the_pages_leads_somewhere() -> None:
    import re

    repo = DOCS.parent
    pages = [repo / "README.md", repo / "bench" / "results" / "README.md", *sorted(DOCS.glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(repo)}: {target}")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{page.relative_to(repo)}: {target} (no such heading)")
    assert broken == []


def test_the_readmes_config_example_is_a_valid_config(tmp_path: Path) -> None:
    import re

    from pipeline.config import load_config

    readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    example = re.search(r"```yaml\n(.*?)```", readme, flags=re.S)
    assert example is not None
    path = tmp_path / "cameras.yaml"
    path.write_text(example.group(1), encoding="utf-8")
    config = load_config(path, environ={"CAM_PASS": "s3cret"})
    assert [s.id for s in config.streams] == ["gate", "yard"]
    assert [line.name for line in config.streams[0].lines] == ["door"]
