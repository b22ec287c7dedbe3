import pytest

from libs.slices.attributes import semver
from libs.slices.quantity import format_quantity


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (14, "14"),
        (1000, "1k"),
        (98000, "98k"),
        (1024, "1Ki"),
        (85899345920, "80Gi"),
        (10334765056, "9856Mi"),
        (2048000, "2000Ki"),
        (1500, "1500"),
        (5 * 10**9, "5G"),
    ],
)
def test_quantities_are_written_as_the_api_server_writes_them(value: int, text: str) -> None:
    assert format_quantity(value) == text


def test_negative_quantities_are_refused() -> None:
    with pytest.raises(ValueError, match="never negative"):
        format_quantity(-1)


@pytest.mark.parametrize(
    ("text", "version"),
    [("570.133.20", "570.133.20"), ("535.104.05", "535.104.5"), ("9.0", "9.0.0"), ("12", "12.0.0"), ("r535", None)],
)
def test_nvidia_versions_become_semver(text: str, version: str | None) -> None:
    assert semver(text) == version
