"""SIGTERM as Ctrl-C: an interrupt swallowed during cleanup still stops the job."""

from __future__ import annotations

import signal

import pytest

from tdn_calc.interrupts import raise_if_interrupted, sigterm_as_interrupt


class _DiesInSigterm:
    """Runs the SIGTERM handler inside ``__del__``, where Python swallows its exception (as
    when the signal lands in a garbage-collection callback)."""

    def __del__(self):
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)


def test_a_swallowed_sigterm_is_raised_at_the_next_check(capsys):
    before = signal.getsignal(signal.SIGTERM)
    with sigterm_as_interrupt():
        raise_if_interrupted()  # nothing pending yet
        _DiesInSigterm()  # collected at once: the KeyboardInterrupt goes nowhere
        with pytest.raises(KeyboardInterrupt):
            raise_if_interrupted()
    assert "KeyboardInterrupt" not in capsys.readouterr().err  # not reported as "ignored"
    raise_if_interrupted()  # the request ends with the block
    assert signal.getsignal(signal.SIGTERM) is before


def test_other_unraisable_errors_are_still_reported(monkeypatch):
    seen = []
    monkeypatch.setattr("sys.unraisablehook", lambda u: seen.append(u.exc_value))

    class Broken:
        def __del__(self):
            raise ValueError("boom in __del__")

    with sigterm_as_interrupt():
        Broken()
    assert [str(e) for e in seen] == ["boom in __del__"]


def test_a_signal_inside_a_deferred_block_is_raised_when_the_block_ends():
    from tdn_calc.interrupts import interrupts_deferred

    done = []
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as in a shell
    try:  # (a pytest-xdist worker ignores SIGINT)
        with pytest.raises(KeyboardInterrupt):
            with interrupts_deferred():
                signal.raise_signal(signal.SIGINT)
                done.append("first write")  # not cut off by the interrupt
                done.append("second write")
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)
    assert done == ["first write", "second write"]


def test_sigterm_inside_a_deferred_block_reaches_sigterm_as_interrupt():
    from tdn_calc.interrupts import interrupts_deferred

    done = []
    with sigterm_as_interrupt():
        with pytest.raises(KeyboardInterrupt):
            with interrupts_deferred():
                signal.raise_signal(signal.SIGTERM)
                signal.raise_signal(signal.SIGTERM)  # twice: delivered once
                done.append("both writes")
        assert done == ["both writes"]
        with pytest.raises(KeyboardInterrupt):  # recorded for the job's next check as well
            raise_if_interrupted()
    with interrupts_deferred():  # nothing received: nothing raised
        done.append("quiet")
    assert done == ["both writes", "quiet"]
