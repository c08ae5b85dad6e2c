"""The build's command line as the offline preset runs it, into a temporary model repository."""

from tests.helpers.servers import copy_repository


def command_line(tmp_path, *options: str) -> list[str]:
    return [
        "--preset",
        "minilm-offline",
        "--repository",
        str(copy_repository(tmp_path / "model_repository")),
        "--output_dir",
        str(tmp_path / "run"),
        *options,
    ]
