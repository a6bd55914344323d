import pytest

from edge.params import ParamsError, Telemetry, TransportParams


def test_defaults_valid_and_roundtrip():
    p = TransportParams()
    assert TransportParams.from_dict(p.to_dict()) == p
    assert p.replace(bitrate_kbps=128).bitrate_kbps == 128


@pytest.mark.parametrize("change, message", [
    ({"bitrate_kbps": 49}, "bitrate_kbps=49 is out of range 50..200"),
    ({"bitrate_kbps": 201}, "out of range"),
    ({"buffer_ms": 99}, "buffer_ms=99"),
    ({"buffer_ms": 501}, "buffer_ms=501"),
    ({"protocol": "sctp"}, "protocol"),
    ({"share": 0.0}, "share"),
    ({"colour": "red"}, "unknown parameter"),
])
def test_out_of_range(change, message):
    with pytest.raises(ParamsError, match=message):
        TransportParams().replace(**change)


def test_telemetry_vector():
    t = Telemetry(t=1.0, latency_ms=40, loss_pct=1, jitter_ms=3, bandwidth_util=0.5, snr_db=20)
    assert t.vector() == [40.0, 1.0, 3.0, 0.5, 20.0]
    assert Telemetry.from_dict({**t.to_dict(), "extra": 1}) == t
