"""Atomic output helpers: a generated section replaces only itself in a hand-written file."""

from __future__ import annotations

import pytest

from harmonia.errors import HarmoniaError
from harmonia.io import check_section, section_markers, write_section_atomic


def test_a_new_file_gets_the_marked_section_alone(tmp_path):
    path = write_section_atomic(tmp_path / "new.md", "table", "| a |\n")
    assert path.read_text() == "<!-- table:begin -->\n| a |\n<!-- table:end -->\n"


def test_the_section_is_replaced_and_the_rest_kept(tmp_path):
    begin, end = section_markers("table")
    doc = tmp_path / "doc.md"
    doc.write_text(f"# Title\n\nbefore\n{begin}\nold\n{end}\nafter\n")
    write_section_atomic(doc, "table", "new 1\nnew 2")
    assert doc.read_text() == f"# Title\n\nbefore\n{begin}\nnew 1\nnew 2\n{end}\nafter\n"
    write_section_atomic(doc, "table", "new 3\n")  # idempotent framing: no blank lines pile up
    assert doc.read_text() == f"# Title\n\nbefore\n{begin}\nnew 3\n{end}\nafter\n"


@pytest.mark.parametrize("text", [
    "no markers\n",
    "<!-- table:begin -->\nonly the start\n",
    "<!-- table:end -->\n<!-- table:begin -->\nreversed\n",
    "<!-- table:begin -->\n<!-- table:end -->\n<!-- table:begin -->\n<!-- table:end -->\n",
])
def test_a_file_without_one_pair_of_markers_is_left_alone(tmp_path, text):
    doc = tmp_path / "doc.md"
    doc.write_text(text)
    with pytest.raises(HarmoniaError, match=r"doc\.md: expected one '<!-- table:begin -->' before one"):
        check_section(doc, "table")
    with pytest.raises(HarmoniaError, match="nothing was changed"):
        write_section_atomic(doc, "table", "new")
    assert doc.read_text() == text


def test_other_sections_do_not_count(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- a:begin -->\nx\n<!-- a:end -->\n<!-- b:begin -->\ny\n<!-- b:end -->\n")
    write_section_atomic(doc, "b", "z")
    assert doc.read_text() == "<!-- a:begin -->\nx\n<!-- a:end -->\n<!-- b:begin -->\nz\n<!-- b:end -->\n"
