"""Models that cannot do the job are refused before any frame, each with the exit code and
advice that fit the case; the one loud fallback left (an official face model that cannot be
had offline) says so and is counted; nothing false is said about a user's own file."""

from __future__ import annotations

import json

import pytest
import torch

from tests.media import make_clip
from tests.official_weights import rrdbnet_x2plus, srvgg_general_x4v3
from vidrestore.models.capabilities import pick_dtype, supports_bf16

NO_BG_NO_FACE = ["--bg-model", "none", "--quiet", "--batch-size", "3"]


@pytest.fixture
def clip(tmp_path):
    return make_clip(tmp_path / "in.mp4", frames=3)


def one_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vidrestore: error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("option,name,said", [
    ("--bg-model", "gfpgan-1.3", "is a face restorer, not a background upscaler"),
    ("--face-model", "realesrgan-x4plus", "is a background upscaler, not a face restorer"),
    ("--bg-model", "parsenet", "not a background upscaler"),
])
def test_a_model_in_the_wrong_role_is_refused_with_exit_2(cli, clip, tmp_path, option, name,
                                                          said):
    args = ["--face-model", "none"] if option == "--bg-model" else ["--bg-model", "none"]
    result = cli(clip, tmp_path / "out.mp4", option, name, *args, "--no-download")
    assert result.exit_code == 2
    assert said in one_line(result)
    assert not (tmp_path / "out.mp4").exists()


def test_a_weight_file_in_the_wrong_role_is_refused_with_exit_2(cli, clip, tmp_path):
    sr = tmp_path / "my_x4.pth"
    torch.save(srvgg_general_x4v3(), sr)
    result = cli(clip, tmp_path / "out.mp4", "--face-model", sr, "--bg-model", "none")
    assert result.exit_code == 2
    assert "super-resolution model, not a face restorer" in one_line(result)


def test_an_unknown_face_model_is_a_model_problem_with_the_choices(cli, clip, tmp_path):
    result = cli(clip, tmp_path / "out.mp4", "--face-model", "gfpgan-13", *NO_BG_NO_FACE)
    assert result.exit_code == 3
    line = one_line(result)
    assert "--face-model gfpgan-13: unknown model" in line
    assert "gfpgan-1.3" in line and "passthrough" in line and "realesrgan" not in line


def test_a_missing_face_model_file_is_exit_3(cli, clip, tmp_path):
    result = cli(clip, tmp_path / "out.mp4", "--face-model", tmp_path / "nope.pth",
                 *NO_BG_NO_FACE)
    assert result.exit_code == 3 and "no such model file" in one_line(result)


def test_a_corrupt_face_model_file_is_exit_3_with_advice_for_a_users_file(cli, clip, tmp_path):
    bad = tmp_path / "mine.pth"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint" * 10)
    result = cli(clip, tmp_path / "out.mp4", "--face-model", bad, *NO_BG_NO_FACE)
    assert result.exit_code == 3
    line = one_line(result)
    assert "truncated or corrupt" in line and "check the file" in line
    assert "models download" not in line  # we cannot fetch the user's own file


def test_a_cached_face_model_with_the_wrong_hash_is_exit_3(cli, clip, tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "GFPGANv1.3.pth").write_bytes(b"\0" * 1000)
    result = cli(clip, tmp_path / "out.mp4", "--face-model", "gfpgan-1.3", *NO_BG_NO_FACE,
                 "--no-download")
    assert result.exit_code == 3
    assert "does not match" in one_line(result) and "models download gfpgan-1.3" in \
        result.output


def test_an_official_face_model_missing_offline_is_a_loud_counted_fallback(cli, clip,
                                                                           tmp_path):
    """GFPGAN cannot be had offline: the bundled vidrestore-face-v2 stands in, said on the
    console and counted in the summary's fallbacks."""
    out = tmp_path / "out.mp4"
    result = cli(clip, out, "--face-model", "gfpgan-1.3", "--bg-model", "none",
                 "--batch-size", "3", "--no-download")
    assert result.exit_code == 0, result.output
    said = "face model gfpgan-1.3 is not available; using vidrestore-face-v2"
    assert said in result.output
    summary = result.summaries[0]
    assert summary["models"]["face"]["name"] == "vidrestore-face-v2"
    assert any(said in f["what"] for f in summary["fallbacks"])
    result = cli(clip, out, "--face-model", "gfpgan-1.3", "--bg-model", "none",
                 "--no-download", "--strict-models", "--overwrite")
    assert result.exit_code == 3 and "gfpgan-1.3" in one_line(result)


def test_a_users_background_file_is_not_called_a_stand_in(cli, clip, tmp_path):
    mine = tmp_path / "my_x2.pth"
    torch.manual_seed(0)
    torch.save(rrdbnet_x2plus(), mine)
    result = cli(clip, tmp_path / "out.mp4", "--bg-model", mine, "--face-model", "none",
                 "--batch-size", "3")
    assert result.exit_code == 0, result.output
    assert "not available" not in result.output and "in its place" not in result.output
    summary = result.summaries[0]
    assert summary["models"]["background"]["source"] == "file"
    assert summary["fallbacks"] == []


def test_a_corrupt_parsenet_is_a_warning_on_the_console(cli, tmp_path, media):
    from tests.media import first_frames, make_clip_of_images

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "parsing_parsenet.pth").write_bytes(b"garbage" * 100)
    clip = make_clip_of_images(tmp_path / "talk.mp4",
                               first_frames(media / "video" / "talk_real_1.mp4", 1))
    result = cli(clip, tmp_path / "out.mp4", "--face-model", "passthrough", "--bg-model",
                 "none", "--scale", "1", "--no-download", "--identity-encoder", "dlib")
    assert result.exit_code == 0, result.output
    warnings = [x for x in result.output.splitlines() if "face parsing off" in x]
    assert len(warnings) == 1 and warnings[0].startswith("vidrestore: warning: ")
    summary = json.loads((tmp_path / "out.mp4.jsonl").read_text().splitlines()[-1])["summary"]
    assert summary["models"]["parser"]["source"] is None


class _Descriptor:
    def __init__(self, bf16: bool, fp16: bool) -> None:
        self.supports_bfloat16, self.supports_half = bf16, fp16


@pytest.mark.parametrize("card_bf16,model,expected", [
    (True, _Descriptor(True, False), torch.bfloat16),   # A100/H100 and GFPGAN
    (False, _Descriptor(True, False), torch.float32),   # T4/V100 and GFPGAN (no fp16)
    (False, _Descriptor(True, True), torch.float16),    # T4/V100 and Real-ESRGAN
    (True, _Descriptor(False, True), torch.float16),
])
def test_bf16_only_where_the_card_has_it(monkeypatch, card_bf16, model, expected):
    calls = []

    def is_bf16_supported(including_emulation=True):
        calls.append(including_emulation)
        return card_bf16

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    cuda = torch.device("cuda")
    assert pick_dtype(model, cuda, half=True) == expected
    assert pick_dtype(model, cuda, half=False) == torch.float32
    assert pick_dtype(model, torch.device("cpu"), half=True) == torch.float32
    assert supports_bf16(cuda) == card_bf16
    assert calls and not any(calls)  # emulated bf16 (slower than float32) does not count
