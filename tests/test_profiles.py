import pytest

from edge.errors import ProfileError
from edge.profile import DeviceProfile, names


@pytest.mark.parametrize("name", ["generic-linux", "rpi4", "rpi5", "jetson-orin-nano"])
def test_builtin_profiles_load(name):
    p = DeviceProfile.by_name(name)
    assert p.name == name
    assert p.audio.native_rate > 0 and p.serial.baud > 0


def test_names():
    assert {"generic-linux", "rpi4", "rpi5", "jetson-orin-nano"} <= set(names())


@pytest.mark.parametrize("text, message", [
    ('name = "x"\nbogus = 1\n', "unknown key"),
    ('name = "x"\n[audio]\nnative_rate = 12345\n', "audio.native_rate"),
    ('name = "x"\n[audio]\nnative_rate = "fast"\n', "must be int"),
    ('name = "x"\n[ptp]\ntransport = "carrier-pigeon"\n', "UDPv4 or L2"),
    ("[audio]\n", "missing required key"),
    ('name = "x"\n[audio\n', "not valid TOML"),
])
def test_invalid_profiles(tmp_path, text, message):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ProfileError, match=message):
        DeviceProfile.load(p)


def test_unknown_name():
    with pytest.raises(ProfileError, match="built-in ones"):
        DeviceProfile.by_name("toaster")
