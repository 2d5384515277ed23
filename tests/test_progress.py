"""The sweep's progress reporters: one line per finished trial, or a tqdm bar over trials on a terminal."""

from __future__ import annotations

import io

from nncli import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_pipe_gets_one_line_per_trial():
    out = io.StringIO()
    reporter = progress.for_trials(out)
    assert type(reporter) is progress.TrialLines
    reporter.trial("trial 0 complete val_loss 0.5 [1/3]; best 0.5 (trial 0)", 1, 3, "best 0.5 (trial 0)")
    reporter.trial("trial 1 pruned [2/3]; best 0.5 (trial 0)", 2, 3, "best 0.5 (trial 0)")
    reporter.close()
    assert out.getvalue().splitlines() == ["trial 0 complete val_loss 0.5 [1/3]; best 0.5 (trial 0)",
                                           "trial 1 pruned [2/3]; best 0.5 (trial 0)"]


def test_a_terminal_gets_a_bar_over_trials_with_the_best_so_far():
    out = Terminal()
    reporter = progress.for_trials(out)
    assert type(reporter) is progress.TrialBar
    reporter.trial("trial 0 complete val_loss 0.5 [1/4]; best 0.5 (trial 0)", 1, 4, "best 0.5 (trial 0)")
    reporter.trial("trial 2 complete val_loss 0.25 [3/4]; best 0.25 (trial 2)", 3, 4, "best 0.25 (trial 2)")
    assert reporter.bar.n == 3 and reporter.bar.total == 4
    reporter.close()
    text = out.getvalue()
    assert "trial 2 complete val_loss 0.25 [3/4]" in text     # each trial's line, above the bar
    assert "3/4" in text and "best 0.25 (trial 2)" in text    # the bar: trials done, the best so far
