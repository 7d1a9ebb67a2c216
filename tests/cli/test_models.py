"""`vidrestore models ...` through the top-level command: output and one-line errors."""

from __future__ import annotations


def test_models_list_shows_bundled_and_missing(cli):
    result = cli("models", "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["NAME", "ROLE", "STATUS"]
    rows = {line.split()[0]: line.split()[2] for line in lines[1:] if line and
            not line.startswith("cache:")}
    assert rows["gfpgan-1.3"] == "missing"
    assert rows["realesrgan-x4plus-ncnn"] == "bundled"


def test_models_path_points_into_the_cache(cli, tmp_path):
    result = cli("models", "path", "gfpgan-1.3")
    assert result.exit_code == 0
    assert result.output.strip() == str(tmp_path / "models" / "GFPGANv1.3.pth")


def test_unknown_model_is_one_line_with_the_known_names(cli):
    result = cli("models", "download", "gfpgan-9")
    assert result.exit_code == 3
    assert len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("vidrestore: error: ") and "gfpgan-1.3" in result.output


def test_unknown_restore_model_is_refused_before_any_work(cli, tmp_path):
    from tests.media import make_clip

    src = make_clip(tmp_path / "in.mp4", frames=2)
    result = cli(src, tmp_path / "out.mp4", "--bg-model", "realesrgan-x8", "--face-model",
                 "none")
    assert result.exit_code == 3 and "realesrgan-x4plus" in result.output
    assert not (tmp_path / "out.mp4").exists()
