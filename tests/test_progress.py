"""Progress bars in a log file: a redraw per step would write thousands of lines."""

import io
import time

from clipeval.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _run(stream) -> str:
    for _ in progress_bar(range(40), file=stream, desc="work"):
        time.sleep(0.01)
    return stream.getvalue()


def test_a_log_gets_few_lines_and_a_terminal_the_usual_bar():
    in_log, in_terminal = _run(io.StringIO()), _run(Terminal())
    assert in_log.count("\r") <= 2 < in_terminal.count("\r")  # a log: the first draw and the final state only
    assert "40/40" in in_log  # the final state is written


def test_a_postfix_set_at_every_step_does_not_redraw_a_log():
    stream = io.StringIO()
    with progress_bar(total=40, file=stream, desc="train") as bar:
        for step in range(40):
            bar.set_postfix(loss=f"{1 / (step + 1):.3f}")
            bar.update(1)
            time.sleep(0.005)
    assert stream.getvalue().count("\r") <= 2 and "loss=0.025" in stream.getvalue()
