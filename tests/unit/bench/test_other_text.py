"""The baselines benchmark's sets from other real text (qscope.bench.other_text), read from small files made here."""

import pytest

from qscope.bench import other_text

STATUS = """Package: libfoo1
Status: install ok installed
Description: the foo library
 libfoo reads and writes foo files, a format for storing bars and bazzes in
 one place.
 .
 This package holds the shared library that programs linked against foo need.

Package: tiny
Description: short
 too short
"""


def test_a_package_description_is_its_indented_lines_in_one_paragraph(tmp_path):
    (tmp_path / "status").write_text(STATUS)
    found = list(other_text.package_descriptions(tmp_path / "status"))
    assert found == [
        "libfoo reads and writes foo files, a format for storing bars and bazzes in one place. This package holds "
        "the shared library that programs linked against foo need."
    ]


def test_licence_paragraphs_keep_the_ones_of_a_readable_length(tmp_path):
    long = "You may copy and distribute verbatim copies of the Program's source code as you receive it. " * 2
    (tmp_path / "GPL").write_text(f"short\n\n{long}\n\n{'x' * 700}\n")
    assert list(other_text.licence_paragraphs(tmp_path)) == [" ".join(long.split())]


def test_only_shell_scripts_give_shell_blocks(tmp_path):
    body = "\n".join(f'echo "step {i}: doing the thing"' for i in range(8))
    (tmp_path / "a").write_text(f"#!/bin/sh\n{body}\n")
    (tmp_path / "b").write_text(f"#!/usr/bin/python3\n{body}\n")
    (tmp_path / "c").write_bytes(b"\x7fELF" + b"\x00" * 100)
    blocks = list(other_text.shell_blocks([tmp_path]))  # eight lines a block; the short ninth is dropped
    assert len(blocks) == 1 and blocks[0].startswith("#!/bin/sh") and all("python" not in b for b in blocks)


def test_a_system_without_the_files_gets_a_clear_error(monkeypatch):
    monkeypatch.setitem(other_text.SETS, "empty", ("a", "b", lambda: iter(()), lambda: iter(())))
    with pytest.raises(ValueError, match="has 0 examples of a and 0 of b"):
        other_text.other_examples("empty", 10)
    with pytest.raises(ValueError, match="no set 'nope'"):
        other_text.other_examples("nope", 10)
