import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import parse_bool, parse_bytes, parse_choice, parse_int, parse_list, parse_seconds


def test_bool_accepts_common_spellings_and_defaults_when_unset():
    assert parse_bool("X", False, {"X": "Yes"}) is True
    assert parse_bool("X", True, {"X": "off"}) is False
    assert parse_bool("X", True, {}) is True


def test_bool_rejects_unknown_value_naming_the_variable():
    with pytest.raises(ImproperlyConfigured, match="X='maybe'"):
        parse_bool("X", False, {"X": "maybe"})


def test_int_rejects_non_integers_and_out_of_range():
    assert parse_int("N", 2, {"N": " 7 "}, minimum=1) == 7
    with pytest.raises(ImproperlyConfigured, match="expected an integer"):
        parse_int("N", 2, {"N": "seven"})
    with pytest.raises(ImproperlyConfigured, match="at least 1"):
        parse_int("N", 2, {"N": "0"}, minimum=1)


def test_bytes_understands_binary_units():
    assert parse_bytes("B", 0, {"B": "1GiB"}) == 1024**3
    assert parse_bytes("B", 0, {"B": "512M"}) == 512 * 1024**2
    assert parse_bytes("B", 0, {"B": "4096"}) == 4096
    assert parse_bytes("B", 5, {}) == 5


@pytest.mark.parametrize("raw", ["1 parsec", "GiB", "-1GiB"])
def test_bytes_rejects_unknown_units_and_negative_sizes(raw):
    with pytest.raises(ImproperlyConfigured, match="B="):
        parse_bytes("B", 0, {"B": raw})


def test_seconds_understands_units_and_rejects_zero():
    assert parse_seconds("T", 1, {"T": "500ms"}) == 0.5
    assert parse_seconds("T", 1, {"T": "2m"}) == 120
    with pytest.raises(ImproperlyConfigured, match="positive"):
        parse_seconds("T", 1, {"T": "0"})


def test_choice_rejects_values_outside_the_list():
    assert parse_choice("P", "auto", ("auto", "nvml"), {"P": "NVML"}) == "nvml"
    with pytest.raises(ImproperlyConfigured, match="auto, nvml"):
        parse_choice("P", "auto", ("auto", "nvml"), {"P": "cuda"})


def test_list_splits_and_trims():
    assert parse_list("L", [], {"L": " a, b ,,c"}) == ["a", "b", "c"]


def test_header_name_becomes_its_meta_key_and_rejects_junk():
    from config.env import parse_header_name

    env = {"H": " X-Forwarded-Proto "}
    assert parse_header_name("H", "", env) == "HTTP_X_FORWARDED_PROTO"
    assert parse_header_name("H", "", {}) == ""
    with pytest.raises(ImproperlyConfigured, match="H="):
        parse_header_name("H", "", {"H": "X-Forwarded-Proto: https"})
