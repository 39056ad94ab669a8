"""qscope.progress, the one reporter of long command-line jobs: its plain lines in a log (phase, counts, rate, time
left, at a bounded rate), totals told late or never, phase clocks, and bars in a terminal. A clock the test moves
stands in for time: nothing sleeps."""

import io

from rich.console import Console

from qscope.progress import PhaseProgress, counts_line, elapsed_line


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def log() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200), out  # a file, not a terminal: plain lines


def lines_of(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_a_plain_line_names_the_phase_with_its_counts_rate_and_time_left():
    console, out = log()
    clock = Clock()
    with PhaseProgress(console, clock=clock) as progress:
        progress.add("pass", 1000, "tokens")
        with progress.run("pass") as advance:
            clock.now += 10
            advance(100)
            clock.now += 80
            advance(900)
    assert lines_of(out) == [
        "pass: 0/1,000 tokens (0%)",
        "pass: 100/1,000 tokens (10%), 10 tokens/s, ~0:01:30 left",
        "pass: done, 1,000 tokens in 90.0 s (11 tokens/s)",
    ]
    assert progress.seconds == {"pass": 90.0}


def test_lines_come_at_a_bounded_rate():
    """10,000 steps over 1,250 s: the start, the first step, each tenth, the end and at most one line per
    every_s besides."""
    console, out = log()
    clock = Clock()
    with PhaseProgress(console, every_s=100, clock=clock) as progress:
        progress.add("cards", 10_000, "features")
        with progress.run("cards") as advance:
            for _ in range(10_000):
                clock.now += 0.125
                advance(1)
    lines = lines_of(out)
    assert len(lines) <= 1 + 1 + 9 + 1 + 1250 / 100, lines
    assert lines[:2] == [
        "cards: 0/10,000 features (0%)",
        "cards: 1/10,000 features (0%), 8.0 features/s, ~0:20:50 left",
    ]
    assert lines[-1] == "cards: done, 10,000 features in 1250.0 s (8.0 features/s)"
    for k in range(1, 10):  # each tenth says so
        assert f"cards: {k},000/10,000 features ({k}0%), 8.0 features/s" in out.getvalue()


def test_without_a_total_lines_keep_every_s_apart_and_tell_no_time_left():
    console, out = log()
    clock = Clock()
    said_at: list[float] = []
    with PhaseProgress(console, every_s=15, clock=clock) as progress:
        for _ in range(1000):
            clock.now += 0.125
            before = len(lines_of(out))
            progress.advance("texts seen", 1)
            if len(lines_of(out)) > before:
                said_at.append(clock.now)
    lines = lines_of(out)
    # its clock starts at the first word (that step's time is not known), its first timed step, then 15 s on
    assert lines[:2] == ["texts seen: 2, 8.0/s", "texts seen: 122, 8.0/s"]
    assert min(b - a for a, b in zip(said_at, said_at[1:], strict=False)) >= 15
    assert len(lines) <= 2 + 125 / 15 and not any("left" in ln for ln in lines)


def test_work_done_before_a_phase_is_first_heard_of_is_not_in_its_rate():
    console, out = log()
    clock = Clock()
    with PhaseProgress(console, clock=clock) as progress:
        report = progress.reporter()
        report("forward + encode (tokens)", 1000, 4000)  # the first batch, timed by no one
        clock.now += 10
        report("forward + encode (tokens)", 2000, 4000)
    assert lines_of(out) == [
        "forward + encode (tokens): 1,000/4,000 (25%)",
        "forward + encode (tokens): 2,000/4,000 (50%), 100/s, ~0:00:20 left",
    ]


def test_a_total_told_late_starts_the_phase_then():
    console, out = log()
    clock = Clock()
    with PhaseProgress(console, every_s=0, clock=clock) as progress:
        progress.add("index", 0, "texts")
        with progress.run("index") as advance:
            assert lines_of(out) == []  # nothing to say before it knows how much there is
            progress.add("index", 50, "texts")
            clock.now += 5
            advance(50)
    assert lines_of(out) == ["index: 0/50 texts (0%)", "index: done, 50 texts in 5.0 s (10 texts/s)"]


def test_a_phase_clock_runs_only_inside_its_stretches():
    console, out = log()
    clock = Clock()
    with PhaseProgress(console, every_s=0, clock=clock) as progress:
        progress.add("write", 100, "features")
        with progress.run("write") as advance:
            clock.now += 5
            advance(50)
        clock.now += 1000  # another phase's turn
        with progress.run("write") as advance:
            clock.now += 5
            advance(50)
    assert progress.seconds["write"] == 10.0 and lines_of(out)[-1].endswith("in 10.0 s (10 features/s)")


def test_updates_alone_start_a_phase_and_its_clock_stops_when_it_is_done():
    console, out = log()
    clock = Clock()
    with PhaseProgress(console, clock=clock) as progress:
        report = progress.reporter()
        report("forward + encode (tokens)", 0, 400)
        clock.now += 2
        report("forward + encode (tokens)", 400, 400)
        clock.now += 60  # later phases
    assert lines_of(out) == [
        "forward + encode (tokens): 0/400 (0%)",
        "forward + encode (tokens): done, 400 in 2.0 s (200/s)",
    ]
    assert progress.seconds["forward + encode (tokens)"] == 2.0


def test_info_and_the_elapsed_wording():
    console, out = log()
    clock = Clock()
    with PhaseProgress(console, clock=clock, line=elapsed_line) as progress:
        progress.add("train", 100)
        with progress.run("train"):
            clock.now += 7
            progress.update("train", done=1, info="loss 2.500")
    assert lines_of(out) == ["train: 1/100 loss 2.500 (7s, about 693s left)"]  # no line at its start: no pace yet
    console, out = log()
    with PhaseProgress(console, clock=clock, line=counts_line) as progress:
        progress.add("explain", 4, "features")
        progress.start("explain")
        clock.now += 2
        progress.advance("explain", info="1 failed")
    assert lines_of(out)[-1] == "explain: 1/4 features (25%), 0.5 features/s, ~0:00:06 left, 1 failed"


def test_a_terminal_gets_a_bar_per_phase_with_its_time_left():
    out = io.StringIO()
    clock = Clock()
    with PhaseProgress(Console(file=out, force_terminal=True, width=160), clock=clock) as progress:
        progress.add("logit effects", 1000, "features")
        progress.add("neighbors", 1000, "features")
        with progress.run("logit effects") as advance:
            clock.now += 10
            advance(250)
    text = out.getvalue()
    assert "━" in text and "250/1,000 features" in text and "25 features/s" in text and "~0:00:30 left" in text
    assert "neighbors" in text and "0/1,000 features" in text


def test_quiet_shows_nothing_and_keeps_the_time():
    clock = Clock()
    progress = PhaseProgress.quiet()
    progress.clock = clock
    progress.add("labels", 10, "features")
    with progress.run("labels") as advance:
        clock.now += 3
        advance(10)
    assert progress.seconds == {"labels": 3.0}
