"""The demo's view of the swarm is built from peer events alone; events survive their JSON-line channel."""

from __future__ import annotations

import io

from rich.console import Console

from swarm.apps.display import SwarmView, join_lines, render, sparkline, summary_lines
from swarm.apps.events import (
    EventWriter,
    Failed,
    Left,
    Ready,
    RoundDone,
    Settled,
    StageChanged,
    Step,
    Synced,
    parse_event,
)
from swarm.apps.view.render import peer_row


def test_events_round_trip_through_json_lines_and_junk_is_ignored():
    out = io.StringIO()
    writer = EventWriter("p1", out)
    sent = [
        Ready(role="stage", peer_id="QmX", stage=1),
        Step(step=3, loss=1.5, samples=96, samples_per_second=40.0),
        RoundDone(round=7, stage=1, group_size=2, bytes_sent=10, bytes_received=12, seconds=0.3, update_norm=0.1),
    ]
    for e in sent:
        writer.emit(e)
    lines = out.getvalue().splitlines()
    assert [parse_event(line) for line in lines] == sent
    assert all(e.peer == "p1" for e in sent)
    for junk in ("", "hello", '{"kind": "step"}', '{"kind":"step","step":"x"}', '{"kind":"nope"}', lines[0][:-3]):
        assert parse_event(junk) is None


def test_view_counts_peers_per_stage_rounds_and_bytes():
    view = SwarmView(n_stages=2)
    for name, stage in (("a", 0), ("b", 1), ("c", 1)):
        view.apply(Synced(peer=name, stage=stage, from_peers=name == "c", seconds=0.1))
        view.apply(Ready(peer=name, role="stage", peer_id=name, stage=stage))
    assert view.peers_per_stage() == [1, 2]
    view.apply(RoundDone(peer="b", round=4, stage=1, group_size=2, bytes_sent=100, bytes_received=50, seconds=1,
                         update_norm=0.2))  # fmt: skip
    view.apply(RoundDone(peer="c", round=4, stage=1, group_size=2, bytes_sent=60, bytes_received=40, seconds=1,
                         update_norm=0.2))  # fmt: skip
    view.apply(StageChanged(peer="c", old=1, new=0))
    assert view.peers_per_stage() == [2, 1]
    view.apply(Left(peer="a"))
    view.mark_exited("b", -9)
    assert view.peers_per_stage() == [1, 0]
    assert view.bytes_averaged == 250 and view.rounds == {4}


def test_trainer_steps_make_the_loss_curve_and_summary():
    view = SwarmView(n_stages=2)
    for i in range(40):
        view.apply(Step(peer="t", step=i, loss=2.0 - i * 0.04, samples=(i + 1) * 32, samples_per_second=50.0))
    view.apply(Left(peer="t", eval_loss=0.5))
    view.apply(Failed(peer="x", message="boom"))
    text = "\n".join(summary_lines(view, seconds=10.0))
    assert "loss: 1.6200 -> 0.8200" in text
    assert "samples: 1280 in 10 s = 128.0 samples/s" in text
    assert "test loss: t 0.5000" in text and "failure: x: boom" in text
    console = Console(file=io.StringIO(), width=120)
    console.print(render(view))  # renders without error


def test_demo_rows_are_the_peers_own_state_rendered_the_same_way():
    view = SwarmView(n_stages=2)
    view.apply(Ready(peer="s", role="stage", peer_id="QmS", stage=1))
    view.apply(RoundDone(peer="s", round=4, stage=1, group_size=3, bytes_sent=1024, bytes_received=1024, seconds=1,
                         update_norm=0.2))  # fmt: skip
    view.apply(Settled(peer="s", action="contributed", round=4, stage=1))
    view.apply(Settled(peer="s", action="claimed", round=4, stage=1, detail={"amount": str(10**19)}))
    assert peer_row("s", view.peers["s"]) == ["s", "stage", "1", "1", "3", "2.0 KiB", "1", "10", view.peers["s"].status]
    assert view.peers["s"].claimed == 10**19  # what swarm-demo waits for before its summary


def test_sparkline_goes_from_low_to_high_and_fits_its_width():
    line = sparkline([float(i) for i in range(1000)], width=50)
    assert len(line) == 50 and line[0] == "▁" and line[-1] == "█"
    assert sparkline([]) == "" and sparkline([1.0, 1.0]) == "▁▁"


def test_the_demo_tells_a_second_terminal_how_to_join_its_swarm():
    lines = join_lines(["/ip4/127.0.0.1/tcp/4001/p2p/QmB"], "demo12ab")
    assert "--join" in lines[1] and "--experiment demo12ab" in lines[1]
    assert lines[1].endswith("--initial-peers /ip4/127.0.0.1/tcp/4001/p2p/QmB")


def test_rounds_cut_short_by_leaving_peers_are_not_reported_as_drops():
    from swarm.apps.display import UNFINISHED, RoundChecks

    view = SwarmView(n_stages=1)
    view.checks[(0, 7)] = RoundChecks(checkers={"stage-peer-0"}, parts=2, bytes=10, seconds=0.1,
                                      dropped={"stage-peer-1": UNFINISHED})
    view.checks[(0, 8)] = RoundChecks(checkers={"stage-peer-0"}, parts=2, bytes=10, seconds=0.1,
                                      dropped={"stage-peer-2": "its part does not match its root"})
    (line,) = [x for x in summary_lines(view, 10.0) if x.startswith("verified rounds")]
    assert "dropped: stage-peer-2 (its part does not match its root)" in line
    assert "stage-peer-1" not in line and "1 rounds cut short by peers leaving" in line
