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
