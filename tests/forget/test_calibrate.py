"""The calibrated stop's decisions on scripted loss trajectories (no training: ``measure`` is replaced)."""

from __future__ import annotations

import torch

from unlearnable.forget.calibrate import CalibratedStop


def _scripted(monkeypatch, losses: dict[int, tuple[float, float]], spread: float = 0.1, **kw) -> CalibratedStop:
    """A stop whose measurement at step s is (forget mean, held-out mean) = ``losses[s]``."""
    x, y = torch.zeros(1, 1, 2, 2, 2), torch.zeros(1, 2, 2, 2, dtype=torch.long)
    stop = CalibratedStop((x, y), (x, y), **kw)

    def measure(model, step: int) -> dict:
        f, h = losses[step]
        return {"step": step, "forget_loss": f, "held_loss": h, "spread": spread, "threshold": h - spread,
                "in_band": f >= h - spread}

    monkeypatch.setattr(stop, "measure", measure)
    return stop


def test_band_mode_checks_again_halfway_to_the_predicted_crossing(monkeypatch) -> None:
    stop = _scripted(monkeypatch, {0: (0.10, 0.50), 2: (0.16, 0.50), 6: (0.34, 0.50), 7: (0.41, 0.50)}, every=30)
    stop.begin(None)
    assert stop.log[0]["mode"] == "band" and not stop.due(3)
    assert not stop.check(None, 2)  # rose 0.03/step, 0.24 from the threshold: check again in 4 steps
    assert stop.next_at == 6 and stop.due(6) and not stop.due(5)
    resumed = _scripted(monkeypatch, {}, every=30, log=[dict(e) for e in stop.log])
    resumed.begin(None)
    assert resumed.next_at == 6  # a resumed run keeps the extra check
    assert not stop.check(None, 6) and stop.next_at == 7  # closer: the next step
    assert stop.check(None, 7) and stop.log[-1]["in_band"]


def test_plateau_mode_stops_when_nothing_moved_or_the_loss_levelled_off(monkeypatch) -> None:
    nothing = _scripted(monkeypatch, {0: (0.50, 0.50), 2: (0.53, 0.52), 4: (0.52, 0.51), 8: (0.54, 0.52)},
                        min_steps=4, every=8)
    assert not nothing.check(None, 2)  # inside the band from the start; still in the warm-up
    assert nothing.log[0]["mode"] == "plateau" and nothing.check(None, 4)  # not moved after the warm-up: stop
    # remembered outliers: the forget loss rises well beyond the held-out drift, then levels off
    outlier = _scripted(monkeypatch, {0: (0.45, 0.50), 4: (0.68, 0.50), 8: (0.69, 0.50), 12: (0.695, 0.51),
                                      16: (0.697, 0.51)}, spread=0.2, min_steps=4, every=4)
    assert [outlier.check(None, s) for s in (4, 8, 12, 16)] == [False, False, False, True]
    # pushed away without levelling off: the brake, a spread above the start and the held-out mean
    pushed = _scripted(monkeypatch, {0: (0.45, 0.50), 1: (0.55, 0.50), 2: (0.75, 0.52)}, min_steps=4, every=4)
    assert not pushed.check(None, 1) and pushed.check(None, 2)
